//! The quick bench runs end to end and writes both files; a child measurement runs in-process.
//! (No timing is asserted: speed belongs in the bench's output, not in tests.)

use mpcl_bench::{BenchConfig, BenchReport, ChildTask, run_and_write, run_child};

#[test]
fn quick_bench_writes_json_and_markdown() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let report = run_and_write(&BenchConfig::quick(None), dir.path(), |_| {})?;
    let json: BenchReport =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("bench.json"))?)?;
    // JSON floats round-trip to within an ulp, so compare what is printed.
    assert_eq!(mpcl_bench::markdown(&json), mpcl_bench::markdown(&report));
    let md = std::fs::read_to_string(dir.path().join("bench.md"))?;
    assert_eq!(md, mpcl_bench::markdown(&report));
    for heading in [
        "Aggregation time per round",
        "System overhead per round",
        "Bytes per client per round",
        "Local training throughput",
        "Round overhead on Flower's workload",
        "Simulation on every core",
        "The QUIC floor under those rounds",
        "Coordinator CPU per client-round against the target",
        "mpcl's own work per client-round",
    ] {
        assert!(md.contains(heading), "missing {heading}:\n{md}");
    }
    // Every cell measured something, and the pieces are consistent.
    assert_eq!(report.aggregation.len(), 2);
    assert!(report.aggregation.iter().all(|a| a.seconds > 0.0));
    let overhead = &report.overhead[0];
    assert_eq!(overhead.overheads.len(), 2, "one overhead per round");
    assert!(overhead.round_seconds >= overhead.slowest_training_seconds);
    assert_eq!(report.bytes.len(), 3);
    let dense = &report.bytes[0];
    assert_eq!(dense.up_ratio, 1.0);
    assert!(report.bytes[1..].iter().all(|b| b.up_ratio < 1.0));
    assert_eq!(report.throughput.len(), 2);
    assert!(report.throughput.iter().all(|t| t.samples_per_second > 0.0));
    assert!(
        report
            .throughput
            .iter()
            .all(|t| t.samples_per_cpu_second > 0.0 && t.cpu_runs.len() == t.runs.len())
    );
    // Flower's workload: one overhead per round, and a measured coordinator CPU time on Linux.
    let flower = &report.flower[0];
    assert_eq!(flower.overheads.len(), mpcl_bench::flower::ROUNDS as usize);
    assert!(flower.round_seconds >= flower.slowest_training_seconds);
    if cfg!(target_os = "linux") {
        assert!(
            flower
                .coordinator_cpu_per_client_round
                .is_some_and(|c| c > 0.0)
        );
        assert!(flower.coordinator_target_ratio().is_some_and(|r| r > 0.0));
    }
    // The QUIC floor under each of those rounds, measured.
    assert_eq!(report.transport_floor.len(), report.flower.len());
    assert!(
        report
            .transport_floor
            .iter()
            .all(|f| f.round_seconds > 0.0 && f.cpu_per_client_round > 0.0 && f.bytes_up > 0)
    );
    // With mpcl's QUIC settings, both ends of every floor connection had found datagrams larger
    // than an Ethernet path carries (1,452 bytes): loopback carries them.
    for floor in &report.transport_floor {
        assert!(
            floor
                .datagram_bytes
                .is_some_and(|(down, up)| down > 1452 && up > 1452),
            "{floor:?}"
        );
    }
    // mpcl's own work on each end, every stage timed.
    let own = &report.own_work[0];
    assert_eq!(own.stages.len(), 8);
    assert!(own.stages.iter().all(|s| s.seconds > 0.0));
    assert!(own.update_bytes > 4 * own.parameters && own.start_round_bytes > 4 * own.parameters);
    assert!(
        own.total(mpcl_bench::own_work::COORDINATOR) > 0.0
            && own.total(mpcl_bench::own_work::CLIENT) > 0.0
    );
    // And quinn alone moving that model's messages, and the table that sets both against the
    // target.
    assert!(
        own.floor_server_cpu_per_client_round
            .is_some_and(|s| s > 0.0)
    );
    assert!(
        mpcl_bench::markdown(&report).contains("The coordinator's target at each model's size")
    );
    // The simulation on one thread and on every thread, each timed (its jobs on threads:
    // without a launcher there are no job processes).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(report.simulation.len(), if threads > 1 { 2 } else { 1 });
    assert_eq!(report.simulation[0].threads, 1);
    assert!(
        report
            .simulation
            .iter()
            .all(|s| s.wall_seconds > 0.0 && s.cpu_seconds > 0.0 && !s.job_processes)
    );
    // Without a child launcher the memory parts are skipped, and the report says so.
    assert!(report.memory.is_empty() && report.scale.is_none());
    assert!(report.notes.iter().any(|n| n.contains("skipped")));
    Ok(())
}

#[test]
fn a_coordinator_round_child_measures_memory() -> anyhow::Result<()> {
    let result = run_child(&ChildTask::CoordinatorRound {
        clients: 5,
        parameters: 1000,
    })?;
    if cfg!(target_os = "linux") {
        assert!(result.peak_bytes >= result.baseline_bytes && result.baseline_bytes > 0);
    }
    assert!(result.seconds > 0.0);
    Ok(())
}
