//! The bench's outputs: `bench.json` (everything, every repetition) and `bench.md` (the tables).

use std::fmt::Write as _;
use std::path::Path;

use crate::{BenchError, BenchReport};

/// Writes `bench.json` and `bench.md` into `out` (created if missing).
pub fn write_outputs(report: &BenchReport, out: &Path) -> Result<(), BenchError> {
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| BenchError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    };
    std::fs::create_dir_all(out).map_err(|e| BenchError::Write {
        path: out.display().to_string(),
        message: e.to_string(),
    })?;
    write(
        "bench.json",
        serde_json::to_string_pretty(report).expect("serialisable") + "\n",
    )?;
    write("bench.md", markdown(report))
}

fn seconds(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// [`seconds`], or "-" for a figure that was not measured.
fn optional_seconds(s: Option<f64>) -> String {
    s.map(seconds).unwrap_or_else(|| "-".into())
}

/// A ratio to `decimals` places with an `x`, or "-" for one that could not be formed.
fn optional_ratio(x: Option<f64>, decimals: usize) -> String {
    x.map(|x| format!("{x:.decimals$}x"))
        .unwrap_or_else(|| "-".into())
}

fn count(n: usize) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// The report as Markdown tables.
pub fn markdown(r: &BenchReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "mpcl bench{} ({} build, {} threads, median of {} run(s); total {:.0} s)\n",
        if r.quick { " --quick" } else { "" },
        r.build,
        r.threads,
        r.repeats,
        r.wall_seconds
    );

    if !r.aggregation.is_empty() {
        let _ = writeln!(
            s,
            "**Aggregation time per round** (FedAvg, `RoundAggregator` add + finish, in-process)\n"
        );
        let mut parameters: Vec<usize> = r.aggregation.iter().map(|a| a.parameters).collect();
        parameters.dedup();
        let mut clients: Vec<usize> = r.aggregation.iter().map(|a| a.clients).collect();
        clients.sort_unstable();
        clients.dedup();
        let _ = write!(s, "| clients |");
        for p in &parameters {
            let _ = write!(s, " {} params |", count(*p));
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(parameters.len()));
        for n in &clients {
            let _ = write!(s, "| {n} |");
            for p in &parameters {
                match r
                    .aggregation
                    .iter()
                    .find(|a| a.clients == *n && a.parameters == *p)
                {
                    Some(a) => {
                        let _ = write!(s, " {} |", seconds(a.seconds));
                    }
                    None => s.push_str(" |"),
                }
            }
            s.push('\n');
        }
    }

    if !r.overhead.is_empty() {
        let _ = writeln!(
            s,
            "\n**System overhead per round, network mode** (QUIC on loopback, tiny model; overhead = round wall time - slowest client's training time)\n"
        );
        let _ = writeln!(
            s,
            "| clients | poll interval | compression | round wall | slowest training | overhead |\n|---|---|---|---|---|---|"
        );
        for o in &r.overhead {
            let _ = writeln!(
                s,
                "| {} | {} ms | {} | {} | {} | {} |",
                o.clients,
                o.poll_interval_ms,
                o.compression,
                seconds(o.round_seconds),
                seconds(o.slowest_training_seconds),
                seconds(o.overhead_seconds)
            );
        }
    }

    if !r.flower.is_empty() {
        let _ = writeln!(
            s,
            "\n**Round overhead on Flower's workload** (mpcl coordinator and clients over QUIC on loopback, clients with a P-vector perturbation instead of training, every client in every round, FedAvg; overhead = round wall time - slowest client's perturbation; Flower 1.41 simulation mode (Ray) from the reference harness on this kind of machine)\n"
        );
        // Flower's own runs from this session, when the bench was given some.
        let same_session = r
            .flower
            .iter()
            .any(|f| f.flower_same_session_seconds.is_some());
        let _ = writeln!(
            s,
            "| clients | parameters | rounds | round wall | overhead | Flower overhead | mpcl / Flower |{} coordinator CPU per client-round | the same, rounds only (admitted to last aggregation) | client CPU per client-round | the same, rounds only |\n|---|---|---|---|---|---|---|{}---|---|---|---|",
            if same_session {
                " Flower, this session | mpcl / Flower, this session |"
            } else {
                ""
            },
            if same_session { "---|---|" } else { "" }
        );
        let ratio = |x| optional_ratio(x, 3);
        for f in &r.flower {
            let this_session = if same_session {
                format!(
                    " {} | {} |",
                    optional_seconds(f.flower_same_session_seconds),
                    ratio(f.same_session_ratio())
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |{this_session} {} | {} | {} | {} |",
                f.clients,
                f.parameters,
                f.rounds,
                seconds(f.round_seconds),
                seconds(f.overhead_seconds),
                optional_seconds(f.flower_overhead_seconds),
                ratio(f.ratio()),
                optional_seconds(f.coordinator_cpu_per_client_round),
                optional_seconds(f.coordinator_rounds_cpu_per_client_round),
                optional_seconds(f.client_cpu_per_client_round),
                optional_seconds(f.client_rounds_cpu_per_client_round),
            );
        }
    }

    if !r.transport_floor.is_empty() {
        let _ = writeln!(
            s,
            "\n**The QUIC floor under those rounds** (quinn alone with mpcl's QUIC settings, one endpoint per client, the same bytes each way per client-round, connections set up before the timed rounds; no encoding, signatures, validation or aggregation; Flower's simulation mode moves no bytes over a network; datagrams: the largest payload the connections had discovered, down / up)\n"
        );
        let _ = writeln!(
            s,
            "| clients | bytes down / up per client | datagrams | round wall | floor / Flower | CPU per client-round (both sides) | the server's alone |\n|---|---|---|---|---|---|---|"
        );
        for f in &r.transport_floor {
            let flower = optional_ratio(
                crate::flower::flower_overhead_seconds(f.clients)
                    .map(|flower| f.round_seconds / flower),
                3,
            );
            let datagrams = f
                .datagram_bytes
                .map(|(down, up)| format!("{down} / {up} B"))
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "| {} | {} / {} B | {} | {} | {} | {} | {} |",
                f.clients,
                f.bytes_down,
                f.bytes_up,
                datagrams,
                seconds(f.round_seconds),
                flower,
                seconds(f.cpu_per_client_round),
                optional_seconds(f.server_cpu_per_client_round),
            );
        }
    }

    if !r.flower.is_empty() {
        let _ = writeln!(
            s,
            "\n**Coordinator CPU per client-round against the target** (the Flower rounds above, from every client's admission to the last aggregation; target 0.2 ms + 1 ns per parameter; the QUIC floor's server, same run, moves the same bytes with no mpcl work)\n"
        );
        let _ = writeln!(
            s,
            "| clients | parameters | target | coordinator, rounds only | coordinator / target | floor server | coordinator / floor server |\n|---|---|---|---|---|---|---|"
        );
        let ratio = |x| optional_ratio(x, 2);
        for f in &r.flower {
            let floor = r
                .transport_floor
                .iter()
                .find(|floor| floor.clients == f.clients)
                .and_then(|floor| floor.server_cpu_per_client_round);
            let over_floor = f
                .coordinator_rounds_cpu_per_client_round
                .zip(floor)
                .map(|(cpu, floor)| cpu / floor);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                f.clients,
                f.parameters,
                seconds(crate::flower::coordinator_cpu_target_seconds(f.parameters)),
                optional_seconds(f.coordinator_rounds_cpu_per_client_round),
                ratio(f.coordinator_target_ratio()),
                optional_seconds(floor),
                ratio(over_floor),
            );
        }
    }

    if !r.own_work.is_empty() {
        let _ = writeln!(
            s,
            "\n**mpcl's own work per client-round** (the functions each end calls, in one thread, without a network, on the schema of the Flower workload's data; the coordinator encodes the round's state once and shares it, as its server does; the round's close is shared out over its updates)\n"
        );
        let _ = writeln!(
            s,
            "| model | parameters | clients | StartRound / update bytes | end | stage | time per client-round |\n|---|---|---|---|---|---|---|"
        );
        for row in &r.own_work {
            let lead = format!(
                "| {} | {} | {} | {} / {} |",
                row.model, row.parameters, row.clients, row.start_round_bytes, row.update_bytes
            );
            for stage in &row.stages {
                let _ = writeln!(
                    s,
                    "{lead} {} | {} | {} |",
                    stage.end,
                    stage.stage,
                    seconds(stage.seconds)
                );
            }
            for end in [crate::own_work::COORDINATOR, crate::own_work::CLIENT] {
                let _ = writeln!(
                    s,
                    "{lead} {end} | **all of it** | **{}** |",
                    seconds(row.total(end))
                );
            }
        }
        let _ = writeln!(
            s,
            "\n**The coordinator's target at each model's size** (0.2 ms + 1 ns per parameter per client-round, against the least the coordinator needs: quinn's server alone moving that model's messages, as the QUIC floor above, with the clients of the row above over {} rounds, plus the coordinator's own work above)\n",
            crate::flower::ROUNDS
        );
        let _ = writeln!(
            s,
            "| model | parameters | target | quinn alone | own work | the two | the two / target |\n|---|---|---|---|---|---|---|"
        );
        for row in &r.own_work {
            let target = crate::flower::coordinator_cpu_target_seconds(row.parameters);
            let own = row.total(crate::own_work::COORDINATOR);
            let both = row
                .floor_server_cpu_per_client_round
                .map(|floor| floor + own);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.model,
                row.parameters,
                seconds(target),
                optional_seconds(row.floor_server_cpu_per_client_round),
                seconds(own),
                optional_seconds(both),
                optional_ratio(both.map(|both| both / target), 2),
            );
        }
    }

    if !r.memory.is_empty() {
        let _ = writeln!(
            s,
            "\n**Coordinator peak memory per round** (state machine + streaming FedAvg, one child process per cell, above the process baseline)\n"
        );
        let _ = writeln!(
            s,
            "| clients | parameters | one dense delta | peak added | round time |\n|---|---|---|---|---|"
        );
        for m in &r.memory {
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} MiB | {:.1} MiB | {} |",
                m.clients,
                count(m.parameters),
                m.delta_mib,
                m.added_mib,
                seconds(m.seconds)
            );
        }
    }

    if !r.bytes.is_empty() {
        let _ = writeln!(
            s,
            "\n**Bytes per client per round and final metrics** (synthetic federated simulation; upload = signed update payload)\n"
        );
        for setup in &r.bytes_setups {
            let _ = writeln!(
                s,
                "- {} model: {} encoder parameters, {} clients, {} rounds x {} local epochs, learning rate {}",
                setup.model,
                setup.parameters,
                setup.subjects,
                setup.rounds,
                setup.local_epochs,
                setup.learning_rate
            );
        }
        let _ = writeln!(
            s,
            "\n| model | compression | upload | vs dense | download | final KL | KL change | cosine | label prior KL |\n|---|---|---|---|---|---|---|---|---|"
        );
        for b in &r.bytes {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} B | {:.3}x | {:.0} B | {:.4} | {:+.2}% | {:.4} | {:.4} |",
                b.model,
                b.compression,
                b.up_bytes_per_client,
                b.up_ratio,
                b.down_bytes_per_client,
                b.final_kl,
                b.kl_change_percent,
                b.final_cosine,
                b.label_prior_kl
            );
        }
    }

    if let Some(first) = r.simulation.first() {
        let _ = writeln!(
            s,
            "\n**Simulation on every core**: {} (wall and CPU time, CPU counting the job processes)\n",
            first.workload
        );
        let _ = writeln!(
            s,
            "| threads | jobs in | wall | CPU | speed-up |\n|---|---|---|---|---|"
        );
        for row in &r.simulation {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2}x |",
                row.threads,
                if row.job_processes {
                    "child processes"
                } else {
                    "this process"
                },
                seconds(row.wall_seconds),
                seconds(row.cpu_seconds),
                row.speedup
            );
        }
    }

    if !r.throughput.is_empty() {
        let _ = writeln!(s, "\n**Local training throughput**\n");
        let _ = writeln!(
            s,
            "| device | model | parameters | batch | samples/s | samples per CPU-second |\n|---|---|---|---|---|---|"
        );
        for t in &r.throughput {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {:.0} |",
                t.device,
                t.model,
                t.parameters,
                t.batch_size,
                t.samples_per_second,
                t.samples_per_cpu_second
            );
        }
        if !r.twin.is_empty() {
            let _ = writeln!(
                s,
                "\nThe PyTorch twin of the default network (its own results, read from its folder; other runs, other machine load):\n"
            );
            let _ = writeln!(
                s,
                "| system | batch | samples/s | samples per CPU-second | mpcl / twin (per CPU-second) |\n|---|---|---|---|---|"
            );
            for t in &r.twin {
                let ours = optional_ratio(
                    r.throughput
                        .iter()
                        .find(|m| m.batch_size == t.batch_size && m.device.starts_with("cpu"))
                        .map(|m| m.samples_per_cpu_second / t.samples_per_cpu_second),
                    2,
                );
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.0} | {:.0} | {} |",
                    t.system, t.batch_size, t.samples_per_second, t.samples_per_cpu_second, ours
                );
            }
        }
    }

    if let Some(scale) = &r.scale {
        let _ = writeln!(
            s,
            "\n**{} simulated clients in one process** (synthetic data, tiny model, {} round(s) x 1 local epoch): {}, peak memory {:.0} MiB ({:.0} MiB above baseline){}",
            scale.clients,
            scale.rounds,
            seconds(scale.seconds),
            scale.peak_mib,
            scale.added_mib,
            scale
                .final_kl
                .map(|kl| format!(", final KL {kl:.4}"))
                .unwrap_or_default()
        );
    }

    if !r.checks.is_empty() {
        let _ = writeln!(s, "\n**Checks**\n");
        for c in &r.checks {
            let _ = writeln!(
                s,
                "- {} {}: {}",
                if c.passed { "PASS" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n**Notes**\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
