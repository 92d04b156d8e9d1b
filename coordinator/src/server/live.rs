//! A read-only view of a running coordinator, for observers such as the live dashboard.
//!
//! The actor owns a [`LivePublisher`] only when someone asked for the view
//! ([`Server::live_status`](super::Server::live_status)); it tells the publisher who made
//! contact and hands it the state machine after each command, and the publisher sends a fresh
//! [`LiveStatus`] through a [`tokio::sync::watch`] channel. Readers only ever see a finished
//! copy: nothing they do can block the actor or change the round state machine, and a reader
//! that falls behind simply sees the newest value.
//!
//! Copies are cheap but not free (one entry per enrolled participant), so a new one is sent at
//! once when something an operator counts changes (phase, round, updates, connections, the
//! privacy spent) and otherwise at most every [`REFRESH`] (last-contact times).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mpcl_protocol::Enrolment;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::round::{Coordinator, ParticipantId};

use super::actor::Command;

/// Longest a last-contact time may go unpublished while commands keep arriving.
pub const REFRESH: Duration = Duration::from_millis(250);

/// Where the run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LivePhase {
    /// No round is open: too few participants are connected (or none asked for work yet).
    WaitingForParticipants,
    /// A round is open and collecting updates.
    Training,
    /// Every round is done, or the run stopped early (see [`LiveStatus::stop_reason`]).
    Finished,
}

/// One enrolled participant, by its enrolment name.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LiveParticipant {
    /// The id in the enrolment file.
    pub name: String,
    /// Has at least one open connection (status queries included).
    pub connected: bool,
    /// Takes part: asked for work on a connection that is still open.
    pub active: bool,
    /// Sampled for the open round.
    pub sampled: bool,
    /// Last request of any kind, in milliseconds since the Unix epoch.
    pub last_contact_unix_ms: Option<u64>,
    /// Last round whose update from this participant was accepted.
    pub last_accepted_round: Option<u64>,
}

/// A snapshot of the coordinator.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LiveStatus {
    /// The run file's `name`.
    pub run_name: String,
    /// The run id, hex.
    pub run_id: String,
    pub phase: LivePhase,
    /// The round in progress, or else the last one completed (0 before the first), as `mpcl
    /// status` reports it.
    pub round: u64,
    pub total_rounds: u64,
    pub completed_rounds: u64,
    /// Updates accepted in the open round.
    pub updates_received: usize,
    /// Participants sampled for the open round.
    pub updates_expected: usize,
    /// Updates the open round needs before it can be aggregated.
    pub updates_required: usize,
    /// Time left before the open round's deadline.
    pub deadline_in_ms: Option<u64>,
    /// Participants that must be connected before a round starts.
    pub start_threshold: usize,
    pub enrolled: usize,
    /// Participants taking part now (see [`LiveParticipant::active`]).
    pub active: usize,
    /// Every enrolled participant, in enrolment order.
    pub participants: Vec<LiveParticipant>,
    /// Epsilon spent so far (differential privacy only), at `delta`.
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    /// `privacy.epsilon_budget`, if set.
    pub epsilon_budget: Option<f64>,
    pub secure_aggregation: bool,
    /// Why the run stopped early, if it did.
    pub stop_reason: Option<String>,
    /// When this snapshot was taken, in milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
}

/// What the actor knows about connections, lent to [`LivePublisher::publish`].
pub(crate) struct Connections<'a> {
    /// Open connections per participant.
    pub open: &'a BTreeMap<ParticipantId, usize>,
    /// Participants taking part.
    pub active: &'a std::collections::BTreeSet<ParticipantId>,
    pub last_accepted: &'a std::collections::HashMap<ParticipantId, u64>,
}

/// The actor's side of the channel.
pub(crate) struct LivePublisher {
    sender: watch::Sender<Arc<LiveStatus>>,
    /// Enrolment order: (id, name).
    roster: Vec<(ParticipantId, String)>,
    last_contact: BTreeMap<ParticipantId, u64>,
    published_at: Option<Instant>,
    /// [`REFRESH`] (shorter or longer in tests).
    refresh: Duration,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Command {
    /// The participant a command comes from.
    pub(crate) fn participant(&self) -> ParticipantId {
        match self {
            Command::Admit { participant, .. }
            | Command::Leave { participant }
            | Command::RequestWork { participant, .. }
            | Command::Update { participant, .. }
            | Command::Status { participant, .. }
            | Command::FinalModel { participant, .. }
            | Command::SecureAggregation { participant, .. } => *participant,
        }
    }
}

impl LivePublisher {
    /// A publisher for a run with this enrolment, and the receiver that observers clone.
    pub(crate) fn new(
        enrolment: &Enrolment,
        coordinator: &Coordinator,
    ) -> (Self, watch::Receiver<Arc<LiveStatus>>) {
        let roster: Vec<(ParticipantId, String)> = enrolment
            .participants()
            .iter()
            .map(|p| (ParticipantId(p.public_key.to_bytes()), p.id.clone()))
            .collect();
        let empty = BTreeMap::new();
        let none = Default::default();
        let accepted = Default::default();
        let first = snapshot(
            &roster,
            &BTreeMap::new(),
            coordinator,
            &Connections {
                open: &empty,
                active: &none,
                last_accepted: &accepted,
            },
            0,
        );
        let (sender, receiver) = watch::channel(Arc::new(first));
        (
            Self {
                sender,
                roster,
                last_contact: BTreeMap::new(),
                published_at: None,
                refresh: REFRESH,
            },
            receiver,
        )
    }

    /// Notes that `command`'s participant made contact now.
    pub(crate) fn contact(&mut self, command: &Command) {
        self.last_contact.insert(command.participant(), unix_ms());
    }

    /// Sends a new snapshot if an operator-visible count changed, or [`REFRESH`] has passed.
    pub(crate) fn publish(
        &mut self,
        coordinator: &Coordinator,
        connections: &Connections<'_>,
        now_ms: u64,
    ) {
        let next = snapshot(
            &self.roster,
            &self.last_contact,
            coordinator,
            connections,
            now_ms,
        );
        let due = self
            .published_at
            .is_none_or(|at| at.elapsed() >= self.refresh);
        let changed = {
            let current = self.sender.borrow();
            !same_counts(&current, &next)
        };
        if due || changed {
            self.published_at = Some(Instant::now());
            self.sender.send_replace(Arc::new(next));
        }
    }
}

/// Whether two snapshots agree on everything but times.
fn same_counts(a: &LiveStatus, b: &LiveStatus) -> bool {
    a.phase == b.phase
        && a.round == b.round
        && a.completed_rounds == b.completed_rounds
        && a.updates_received == b.updates_received
        && a.updates_expected == b.updates_expected
        && a.active == b.active
        && a.epsilon == b.epsilon
        && a.stop_reason == b.stop_reason
        && a.participants.len() == b.participants.len()
        && a.participants.iter().zip(&b.participants).all(|(x, y)| {
            x.connected == y.connected
                && x.active == y.active
                && x.sampled == y.sampled
                && x.last_accepted_round == y.last_accepted_round
        })
}

fn snapshot(
    roster: &[(ParticipantId, String)],
    last_contact: &BTreeMap<ParticipantId, u64>,
    coordinator: &Coordinator,
    connections: &Connections<'_>,
    now_ms: u64,
) -> LiveStatus {
    let config = coordinator.config();
    let open = coordinator.round_status();
    let phase = if coordinator.is_finished() {
        LivePhase::Finished
    } else if open.is_some() {
        LivePhase::Training
    } else {
        LivePhase::WaitingForParticipants
    };
    let sampled: std::collections::BTreeSet<ParticipantId> = open
        .as_ref()
        .map(|s| s.sampled.iter().copied().collect())
        .unwrap_or_default();
    let participants = roster
        .iter()
        .map(|(id, name)| LiveParticipant {
            name: name.clone(),
            connected: connections.open.get(id).is_some_and(|n| *n > 0),
            active: connections.active.contains(id),
            sampled: sampled.contains(id),
            last_contact_unix_ms: last_contact.get(id).copied(),
            last_accepted_round: connections.last_accepted.get(id).copied(),
        })
        .collect();
    let spent = coordinator.privacy_spent();
    LiveStatus {
        run_name: config.name.clone(),
        run_id: hex(&coordinator.run_id()),
        phase,
        round: open
            .as_ref()
            .map(|s| s.round)
            .unwrap_or_else(|| coordinator.completed_rounds()),
        total_rounds: config.rounds,
        completed_rounds: coordinator.completed_rounds(),
        updates_received: open.as_ref().map(|s| s.accepted).unwrap_or(0),
        updates_expected: open.as_ref().map(|s| s.sampled.len()).unwrap_or(0),
        updates_required: config.min_clients_to_aggregate,
        deadline_in_ms: open
            .as_ref()
            .map(|s| s.deadline_at_ms.saturating_sub(now_ms)),
        start_threshold: config.start_threshold(),
        enrolled: roster.len(),
        active: connections.active.len(),
        participants,
        epsilon: spent.as_ref().map(|s| s.epsilon),
        delta: spent.as_ref().map(|s| s.delta),
        epsilon_budget: config.privacy.epsilon_budget,
        secure_aggregation: config.privacy.secure_aggregation,
        stop_reason: coordinator.stop_reason().map(ToString::to_string),
        taken_at_unix_ms: unix_ms(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use mpcl_protocol::NodeIdentity;
    use mpcl_protocol::identity::Participant;

    use super::*;
    use crate::config::CoordinatorConfig;
    use crate::round::Event;
    use crate::test_support::{RUN, global};

    #[test]
    fn counts_are_published_at_once_and_contact_times_at_most_every_refresh() {
        let names = ["alice", "bob"];
        let participants: Vec<Participant> = names
            .iter()
            .map(|name| Participant {
                id: name.to_string(),
                public_key: NodeIdentity::generate(Some(name)).unwrap().public_key(),
            })
            .collect();
        let ids: Vec<ParticipantId> = participants
            .iter()
            .map(|p| ParticipantId(p.public_key.to_bytes()))
            .collect();
        let enrolment = Enrolment::from_participants(participants).unwrap();
        let config = CoordinatorConfig {
            name: "live".into(),
            rounds: 2,
            clients_per_round: Some(2),
            min_clients_to_aggregate: 2,
            start_at_label_prior: false,
            ..CoordinatorConfig::default()
        };
        let mut coordinator = Coordinator::new(config, RUN, global()).unwrap();
        let (mut publisher, mut receiver) = LivePublisher::new(&enrolment, &coordinator);
        // Long enough that no pause of a busy test machine makes a publication due by time.
        publisher.refresh = Duration::from_secs(5);
        {
            let first = receiver.borrow_and_update();
            assert_eq!(first.phase, LivePhase::WaitingForParticipants);
            assert_eq!((first.round, first.total_rounds, first.enrolled), (0, 2, 2));
            let shown: Vec<&str> = first.participants.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(shown, names, "enrolment names, in enrolment order");
            assert!(first.participants.iter().all(|p| !p.connected));
        }

        let mut open = BTreeMap::new();
        let mut active = BTreeSet::new();
        let last_accepted = HashMap::new();
        fn connections<'a>(
            open: &'a BTreeMap<ParticipantId, usize>,
            active: &'a BTreeSet<ParticipantId>,
            last_accepted: &'a HashMap<ParticipantId, u64>,
        ) -> Connections<'a> {
            Connections {
                open,
                active,
                last_accepted,
            }
        }
        // The first publication is always sent; the next one only for a change.
        publisher.publish(
            &coordinator,
            &connections(&open, &active, &last_accepted),
            0,
        );
        receiver.borrow_and_update();
        publisher.publish(
            &coordinator,
            &connections(&open, &active, &last_accepted),
            0,
        );
        assert!(!receiver.has_changed().unwrap(), "nothing changed");
        open.insert(ids[0], 1);
        active.insert(ids[0]);
        publisher.publish(
            &coordinator,
            &connections(&open, &active, &last_accepted),
            0,
        );
        assert!(
            receiver.has_changed().unwrap(),
            "a connection counts at once"
        );
        let seen = receiver.borrow_and_update().clone();
        assert!(seen.participants[0].connected && seen.participants[0].active);
        assert_eq!(seen.active, 1);

        // Only a contact time changed: not sent before the refresh interval has passed, then
        // sent.
        publisher.contact(&Command::Leave {
            participant: ids[0],
        });
        publisher.publish(
            &coordinator,
            &connections(&open, &active, &last_accepted),
            0,
        );
        assert!(!receiver.has_changed().unwrap());
        publisher.refresh = Duration::ZERO;
        publisher.publish(
            &coordinator,
            &connections(&open, &active, &last_accepted),
            0,
        );
        assert!(receiver.has_changed().unwrap());
        let contact = receiver.borrow_and_update().participants[0].last_contact_unix_ms;
        assert!(contact.is_some_and(|at| at > 0));

        // Both ask for work: the round opens and shows at once.
        open.insert(ids[1], 1);
        active.insert(ids[1]);
        for id in &ids {
            coordinator.handle(0, Event::WorkRequested { participant: *id });
        }
        publisher.publish(
            &coordinator,
            &connections(&open, &active, &last_accepted),
            1_000,
        );
        let live = receiver.borrow_and_update().clone();
        assert_eq!(live.phase, LivePhase::Training, "{live:?}");
        assert_eq!(
            (live.round, live.updates_expected, live.updates_received),
            (1, 2, 0)
        );
        assert!(live.participants.iter().all(|p| p.sampled));
        assert!(live.deadline_in_ms.is_some());
    }
}
