//! Storage yields the CPU to detection.
//!
//! The worker's threads do two jobs of different urgency: the rules, whose
//! delay is the delay of every incident, and Parquet (zstd, fsync, merging
//! files), whose delay only lengthens the time before events are durable
//! and searchable. When the cores are short, the storage threads run at a
//! lower scheduling priority (`storage.nice`, nice steps below the
//! process's own), so the rules thread, the intake and the API go first.
//! Storage still gets the cores the moment the rules wait: the bound on
//! buffered events (`storage.max_buffer_mb`) stops the rules when storage
//! falls that far behind, so it cannot starve, and with idle cores the
//! priority changes nothing.

/// CPU seconds the calling thread has used (`/proc/thread-self/schedstat`;
/// `None` where the kernel does not say): how the storage bench and
/// `vigil bench --report` time a stage without the time it waited.
pub fn thread_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse::<f64>().ok().map(|ns| ns / 1e9)
}

/// The most nice steps storage is put below the process.
pub const MAX_NICE: u8 = 19;

/// [`lower_this_thread`], saying on stderr when the system refuses (the
/// thread then runs at the rules' priority); `what` names the thread's job.
pub fn lower_this_thread_or_say(steps: u8, what: &str) {
    if let Err(e) = lower_this_thread(steps) {
        eprintln!("vigil worker: storage.nice = {steps} refused ({e}); {what} runs at the rules' priority");
    }
}

/// Lowers the calling thread's priority by `steps` nice steps (up to the
/// lowest, 19). Threads it then starts inherit the priority. Linux only:
/// elsewhere, and when the system refuses, the thread keeps its priority
/// (storage works the same, only without yielding).
pub fn lower_this_thread(steps: u8) -> std::io::Result<()> {
    if steps == 0 {
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        // On Linux a thread id names one thread to {get,set}priority.
        let me = Some(rustix::thread::gettid());
        let now = getpriority_process(me)?;
        setpriority_process(me, now.saturating_add(i32::from(steps)).min(i32::from(MAX_NICE)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The priority of the calling thread (Linux: per thread).
    #[cfg(target_os = "linux")]
    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_calling_thread_and_those_it_starts_are_lowered() {
        let before = nice();
        let (lowered, child) = std::thread::spawn(move || {
            lower_this_thread(5).unwrap();
            let lowered = nice();
            (lowered, std::thread::spawn(nice).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before + 5).min(19));
        assert_eq!(child, lowered, "a thread started by a lowered thread inherits its priority");
        assert_eq!(nice(), before, "the other threads keep theirs");
        // Never past the lowest priority, and 0 steps is no change.
        let floor = std::thread::spawn(|| {
            lower_this_thread(MAX_NICE).unwrap();
            lower_this_thread(MAX_NICE).unwrap();
            let floor = nice();
            lower_this_thread(0).unwrap();
            (floor, nice())
        })
        .join()
        .unwrap();
        assert_eq!(floor, (19, 19));
    }
}
