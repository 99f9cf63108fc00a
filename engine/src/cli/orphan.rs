//! Processes that a run starts for itself (`q80 --engine ballista`'s
//! scheduler, executors and S3 server) stop when that run's process is gone,
//! however it went: a `kill -9` of the driver must not leave a cluster
//! running.
//!
//! The driver sets [`PARENT_PID_ENV`] to its own pid on each process it
//! spawns. The child checks every 200 ms that its parent is still that pid
//! (Linux hands an orphan to init or a subreaper) and, once it is not, sends
//! itself SIGTERM: the same clean stop as `kill` (the S3 server and the
//! scheduler close their servers; an executor lets Ballista shut down, then
//! releases its markers and spill files). A process still alive 10 s later
//! gets SIGKILL. A process started by hand (no variable) runs until it is
//! told to stop.
//!
//! Why not `prctl(PR_SET_PDEATHSIG)`: it fires when the *thread* that forked
//! exits, and the driver spawns from tokio's blocking pool, whose threads
//! come and go while the run goes on.
//!
//! The driver's side of the same contract is [`terminate`]: how it stops
//! the processes it started when the run ends.

use std::process::Child;
use std::time::{Duration, Instant};

use super::CliError;

/// The environment variable holding the pid of the process to outlive not.
pub const PARENT_PID_ENV: &str = "SHOVEL_PARENT_PID";

const POLL: Duration = Duration::from_millis(200);
const GRACE: Duration = Duration::from_secs(10);

/// Starts the watch if [`PARENT_PID_ENV`] is set (see the module docs).
pub fn watch_parent_from_env() -> Result<(), CliError> {
    let Ok(v) = std::env::var(PARENT_PID_ENV) else {
        return Ok(());
    };
    let parent = v.trim().parse::<u32>().map_err(|_| {
        CliError::usage(format!(
            "{PARENT_PID_ENV}=`{v}` is not a process id; unset it (it is set by `shovel q80 \
             --engine ballista` for the processes it starts)"
        ))
    })?;
    watch_parent(parent);
    Ok(())
}

/// SIGTERM to this process once its parent is no longer `parent`, SIGKILL
/// [`GRACE`] later (a thread of its own: it works whatever the runtime is
/// doing).
pub fn watch_parent(parent: u32) {
    let spawned = std::thread::Builder::new()
        .name("shovel-parent-watch".into())
        .spawn(move || {
            while parent_is(parent) {
                std::thread::sleep(POLL);
            }
            eprintln!("shovel: parent process {parent} is gone: stopping");
            signal_self(libc::SIGTERM);
            std::thread::sleep(GRACE);
            signal_self(libc::SIGKILL);
        });
    if let Err(e) = spawned {
        eprintln!("shovel: warning: cannot watch the parent process {parent}: {e}");
    }
}

/// Stops processes this one started: SIGTERM to each, in the given order,
/// then waits up to `grace` for all of them and SIGKILLs what is left.
pub fn terminate(children: &mut [&mut Child], grace: Duration) {
    for c in children.iter() {
        if let Ok(pid) = i32::try_from(c.id()) {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + grace;
    for c in children.iter_mut() {
        loop {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

fn parent_is(pid: u32) -> bool {
    // SAFETY: getppid(2) has no preconditions and cannot fail.
    let ppid = unsafe { libc::getppid() };
    u32::try_from(ppid).is_ok_and(|p| p == pid)
}

fn signal_self(sig: libc::c_int) {
    // SAFETY: kill(2) on our own pid; no memory is touched.
    unsafe {
        libc::kill(libc::getpid(), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_recognised_and_a_stranger_is_not() {
        // SAFETY: as above.
        let real = unsafe { libc::getppid() } as u32;
        assert!(parent_is(real));
        assert!(!parent_is(real.wrapping_add(1)));
    }
}
