//! What the bench's federations over QUIC share: deterministic keys and their enrolment (the
//! QUIC floor's too), a coordinator in which every client takes part in every round, and its
//! server on loopback.

use std::path::Path;
use std::sync::Arc;

use mpcl_coordinator::server::{NetworkSettings, Server, ServerSetup};
use mpcl_coordinator::{Coordinator, CoordinatorConfig};
use mpcl_data::{ModelConfig, Schema};
use mpcl_model::{Device, MpclModel};
use mpcl_protocol::identity::Participant as Enrolled;
use mpcl_protocol::messages::GlobalState;
use mpcl_protocol::{Enrolment, NodeIdentity, SigningKey};

use crate::BenchError;

/// Most participants a bench federation can have: each key comes from one seed byte.
pub const MAX_CLIENTS: usize = 240;

/// The bench's deterministic identity `id` from a one-byte seed.
fn identity(id: &str, seed: u8) -> Result<NodeIdentity, BenchError> {
    NodeIdentity::from_signing_key(Some(id), SigningKey::from_bytes(&[seed; 32]))
        .map_err(|e| BenchError::setup("identity", e))
}

/// The coordinator's and the participants' identities, and the participants' enrolment.
pub(crate) struct BenchKeys {
    pub coordinator: NodeIdentity,
    pub participants: Vec<Arc<NodeIdentity>>,
    pub enrolment: Enrolment,
}

impl BenchKeys {
    /// Keys for 1 to [`MAX_CLIENTS`] participants `p0`, `p1`, ...; `what` names the
    /// measurement in the error.
    pub fn new(clients: usize, what: &str) -> Result<Self, BenchError> {
        if clients == 0 || clients > MAX_CLIENTS {
            return Err(BenchError::setup(
                what,
                format!("1 to {MAX_CLIENTS} clients (one key seed byte each)"),
            ));
        }
        let participants: Vec<Arc<NodeIdentity>> = (0..clients)
            .map(|i| identity(&format!("p{i}"), i as u8 + 1).map(Arc::new))
            .collect::<Result<_, _>>()?;
        let enrolment = Enrolment::from_participants(
            participants
                .iter()
                .map(|p| Enrolled {
                    id: p.id().to_string(),
                    public_key: p.public_key(),
                })
                .collect(),
        )
        .map_err(|e| BenchError::setup("enrolment", e))?;
        Ok(Self {
            coordinator: identity("coordinator", 250)?,
            participants,
            enrolment,
        })
    }

    /// Binds `coordinator`'s server on 127.0.0.1 (a free port) with these keys and `network`,
    /// writing its files into `out_dir`.
    pub fn bind_server(
        &self,
        coordinator: Coordinator,
        model: &ModelConfig,
        schema: &Schema,
        network: NetworkSettings,
        out_dir: &Path,
    ) -> Result<Server, BenchError> {
        Server::bind(ServerSetup {
            coordinator,
            identity: NodeIdentity::from_signing_key(
                Some(self.coordinator.id()),
                self.coordinator.signing_key().clone(),
            )
            .map_err(|e| BenchError::setup("identity", e))?,
            enrolment: self.enrolment.clone(),
            model_config: model.clone(),
            schema: schema.clone(),
            network,
            listen: "127.0.0.1:0".parse().expect("valid address"),
            out_dir: out_dir.to_path_buf(),
        })
        .map_err(|e| BenchError::setup("server", e))
    }
}

/// A run of `rounds` rounds in which all `clients` take part, the protocol alone: no
/// evaluation round, no held-out data, no label-prior opening round.
pub(crate) fn every_client_config(name: &str, rounds: u64, clients: usize) -> CoordinatorConfig {
    CoordinatorConfig {
        evaluation: mpcl_coordinator::evaluation::EvaluationConfig::disabled(),
        start_at_label_prior: false,
        name: name.into(),
        seed: 5,
        rounds,
        clients_per_round: Some(clients),
        min_clients_to_aggregate: clients,
        min_available_clients: Some(clients),
        round_deadline_secs: 600,
        ..CoordinatorConfig::default()
    }
}

/// The global state the bench's runs start from: a `model` network for `schema`, made on the
/// CPU with seed 5.
pub(crate) fn initial_state(
    schema: &Schema,
    model: &ModelConfig,
) -> Result<GlobalState, BenchError> {
    Ok(MpclModel::new(schema, model, &Device::flex(), 5)
        .map_err(|e| BenchError::setup("model", e))?
        .global_state())
}
