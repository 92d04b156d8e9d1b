//! Independent jobs on several threads, their results in job order.
//!
//! A simulation's arms and partitions do not depend on each other (each starts from the same
//! initial weights and sees only its own data), so they may run at the same time; whatever
//! reads their results reads them in the order a one-thread run produces them, which keeps
//! every output identical whatever the number of threads.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Runs `job(0)`, ..., `job(count - 1)` on up to `workers` threads (at least one; one runs them
/// in order on the calling thread) and returns their results in job order. `start_order` (a
/// permutation of the jobs) is the order several workers take them in: the longest first, so
/// that no worker is left with a long job at the end. After a job fails no new job starts; the
/// error returned is that of the first failed job in job order among those that ran.
pub fn run_in_order<T, E>(
    count: usize,
    workers: usize,
    start_order: &[usize],
    job: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E>
where
    T: Send,
    E: Send,
{
    let workers = workers.clamp(1, count.max(1));
    if workers == 1 {
        return (0..count).map(job).collect();
    }
    let mut sorted = start_order.to_vec();
    sorted.sort_unstable();
    assert!(
        sorted.iter().copied().eq(0..count),
        "the start order must hold every job once"
    );
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<T, E>>>> = Mutex::new((0..count).map(|_| None).collect());
    let work = || {
        loop {
            if failed.load(Ordering::Relaxed) {
                return;
            }
            let taken = next.fetch_add(1, Ordering::Relaxed);
            let Some(&index) = start_order.get(taken) else {
                return;
            };
            let result = job(index);
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(work);
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    if results.iter().any(|r| matches!(r, Some(Err(_)))) {
        let first = results
            .into_iter()
            .flatten()
            .find_map(Result::err)
            .expect("a failed job");
        return Err(first);
    }
    Ok(results
        .into_iter()
        .map(|result| match result {
            Some(Ok(value)) => value,
            // Jobs are skipped only after a failure, handled above.
            _ => unreachable!("a job was skipped without a failure"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_job_order_whatever_the_workers() {
        let reversed: Vec<usize> = (0..10).rev().collect();
        for (workers, order) in [1, 2, 3, 8]
            .into_iter()
            .flat_map(|w| [(w, (0..10).collect::<Vec<_>>()), (w, reversed.clone())])
        {
            let squares = run_in_order(10, workers, &order, |i| {
                // Later jobs finish first.
                std::thread::sleep(std::time::Duration::from_millis((10 - i as u64) * 2));
                Ok::<_, ()>(i * i)
            })
            .unwrap();
            assert_eq!(
                squares,
                (0..10).map(|i| i * i).collect::<Vec<_>>(),
                "{workers}"
            );
        }
    }

    #[test]
    fn the_first_failure_in_job_order_is_returned() {
        for workers in [1, 2, 4] {
            let order: Vec<usize> = (0..6).collect();
            let error = run_in_order(6, workers, &order, |i| if i >= 3 { Err(i) } else { Ok(i) })
                .unwrap_err();
            assert_eq!(error, 3, "{workers}");
        }
        // Started last first, the jobs before the failure may never run: the failure found
        // first in job order among those that ran is returned, never a skipped job's result.
        for workers in [2, 4] {
            let order: Vec<usize> = (0..6).rev().collect();
            let error = run_in_order(6, workers, &order, |i| if i >= 3 { Err(i) } else { Ok(i) })
                .unwrap_err();
            assert!((3..6).contains(&error), "{workers}: {error}");
        }
    }
}
