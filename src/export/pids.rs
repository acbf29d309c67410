//! The pids viewers are given. Perfetto and Chrome JSON viewers know a
//! process by its pid alone, so two processes with one pid — on two hosts,
//! in two containers of one host (each has its own pid 1), or one pid
//! reused — would be drawn as one process, their threads mixed. A pid is
//! unique only within its `PidSpace` (host, boot, pid namespace), and there
//! only among the processes alive at once: its start time tells a reused
//! pid from the same process (recorded twice).
//!
//! So each pid a viewer sees stands for one process: the first to use a
//! number keeps it; a later one with the same number gets a stand-in from
//! `FIRST_STAND_IN` up (above any Linux pid: `pid_max` is at most 2^22),
//! skipping numbers already taken. Parent pids go through the same map, so
//! a parent link stays inside its space and goes to the latest process of
//! that pid that started before the child. The process's own pid stays in
//! its name (`<session> (pid N)`) and in the writers' metadata, where
//! readers take it back from. Thread ids need no stand-ins: viewers key a
//! thread by its process and tid.

use std::collections::{HashMap, HashSet};

use crate::timeline::{PidSpace, ProcessInfo};

/// The first stand-in pid: Linux pids are below 2^22 (`PID_MAX_LIMIT`).
pub const FIRST_STAND_IN: u32 = 1 << 22;

/// Which viewer pid stands for which process; see the module docs.
#[derive(Debug, Default)]
pub struct ViewerPids {
    /// Per pid of a space, the processes that had it, oldest first.
    seen: HashMap<(PidSpace, u32), Vec<Seen>>,
    taken: HashSet<u32>,
    next_stand_in: u32,
}

/// A process that had a pid: when it started (clock ticks after boot; 0
/// if unknown: an older recorder's, or a parent known only by its pid) and
/// the pid viewers are given for it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    start: u64,
    shown: u32,
}

impl ViewerPids {
    pub fn new() -> Self {
        ViewerPids {
            next_stand_in: FIRST_STAND_IN,
            ..ViewerPids::default()
        }
    }

    /// The pid viewers are given for `process`.
    pub fn pid(&mut self, process: &ProcessInfo) -> u32 {
        let start = process.process_start_ticks;
        // The same process again, or one of which only the pid was known.
        let same = |s: &Seen| s.start == start || s.start == 0 || start == 0;
        let seen = self.find_or_take(process.pid_space(), process.pid, same, start);
        seen.start = seen.start.max(start);
        seen.shown
    }

    /// The pid viewers are given for `process`'s parent; 0 (none) stays 0.
    pub fn ppid(&mut self, process: &ProcessInfo) -> u32 {
        if process.ppid == 0 {
            return 0;
        }
        let start = process.process_start_ticks;
        // A parent starts before its child; one not seen yet is known by
        // its pid only.
        let parent = |s: &Seen| s.start == 0 || start == 0 || s.start <= start;
        self.find_or_take(process.pid_space(), process.ppid, parent, 0)
            .shown
    }

    /// The latest process of `pid` in `space` that `is_it`, else a new one
    /// with `start` and a pid of its own.
    fn find_or_take(
        &mut self,
        space: PidSpace,
        pid: u32,
        is_it: impl Fn(&Seen) -> bool,
        start: u64,
    ) -> &mut Seen {
        let seen = self.seen.entry((space, pid)).or_default();
        let at = match seen.iter().rposition(is_it) {
            Some(at) => at,
            None => {
                let shown = take(&mut self.taken, &mut self.next_stand_in, pid);
                seen.push(Seen { start, shown });
                seen.len() - 1
            }
        };
        &mut seen[at]
    }
}

/// `pid` if no process has it yet, else the next stand-in free.
fn take(taken: &mut HashSet<u32>, next_stand_in: &mut u32, pid: u32) -> u32 {
    let mut shown = pid;
    while taken.contains(&shown) {
        shown = *next_stand_in;
        // Wrapping (never: one stand-in per process) starts again at the
        // first, whose taken numbers the loop skips.
        *next_stand_in = next_stand_in.wrapping_add(1).max(FIRST_STAND_IN);
    }
    taken.insert(shown);
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(host: &str, namespace: u64, pid: u32, ppid: u32) -> ProcessInfo {
        ProcessInfo {
            host: host.into(),
            boot_id: format!("boot-{host}"),
            pid_namespace: namespace,
            pid,
            ppid,
            ..ProcessInfo::default()
        }
    }

    fn started(process: ProcessInfo, ticks: u64) -> ProcessInfo {
        ProcessInfo {
            process_start_ticks: ticks,
            ..process
        }
    }

    #[test]
    fn one_space_keeps_its_pids_and_a_second_gets_stand_ins() {
        let mut pids = ViewerPids::new();
        let a = process("a", 1, 1, 0);
        let a_child = process("a", 1, 7, 1);
        assert_eq!(pids.pid(&a), 1);
        assert_eq!((pids.pid(&a_child), pids.ppid(&a_child)), (7, 1));
        // The same process again (a second stream of it): the same pid.
        assert_eq!(pids.pid(&a), 1);
        // Another container of the same host: another namespace.
        let b = process("a", 2, 1, 0);
        let b_child = process("a", 2, 7, 1);
        let b_other = process("a", 2, 9, 1);
        assert_eq!(pids.pid(&b), FIRST_STAND_IN);
        assert_eq!(pids.pid(&b_child), FIRST_STAND_IN + 1);
        // Its children's parent is its own pid 1, not the first space's.
        assert_eq!(pids.ppid(&b_child), FIRST_STAND_IN);
        assert_eq!(
            (pids.pid(&b_other), pids.ppid(&b_other)),
            (9, FIRST_STAND_IN)
        );
        // Another host with pid 1 and a namespace number like the first's.
        assert_eq!(pids.pid(&process("c", 1, 1, 0)), FIRST_STAND_IN + 2);
    }

    #[test]
    fn a_real_pid_equal_to_a_stand_in_gets_a_stand_in_itself() {
        let mut pids = ViewerPids::new();
        pids.pid(&process("a", 1, 5, 0));
        assert_eq!(pids.pid(&process("b", 1, 5, 0)), FIRST_STAND_IN);
        // A (non-Linux) pid that happens to be the stand-in already given.
        let odd = process("c", 1, FIRST_STAND_IN, 0);
        assert_eq!(pids.pid(&odd), FIRST_STAND_IN + 1);
        // Stand-ins go on after the one the odd process took.
        assert_eq!(pids.pid(&process("d", 1, 5, 0)), FIRST_STAND_IN + 2);
        // An unseen parent of another space: also kept apart.
        let orphan = process("e", 1, 6, 5);
        assert_eq!(pids.ppid(&orphan), FIRST_STAND_IN + 3);
    }

    #[test]
    fn a_reused_pid_gets_a_stand_in_and_children_the_parent_of_their_time() {
        let mut pids = ViewerPids::new();
        let first = started(process("a", 1, 50, 0), 100);
        let reused = started(process("a", 1, 50, 0), 900);
        assert_eq!(pids.pid(&first), 50);
        // Recorded twice: the same process.
        assert_eq!(pids.pid(&first), 50);
        assert_eq!(pids.pid(&reused), FIRST_STAND_IN);
        // Each child's parent is the 50 that had started before it.
        assert_eq!(pids.ppid(&started(process("a", 1, 60, 50), 200)), 50);
        assert_eq!(
            pids.ppid(&started(process("a", 1, 61, 50), 950)),
            FIRST_STAND_IN
        );
        // A start unknown (an older recorder): taken for the latest one.
        assert_eq!(pids.pid(&process("a", 1, 50, 0)), FIRST_STAND_IN);
    }

    #[test]
    fn a_parent_known_first_by_its_pid_is_the_process_that_streams_later() {
        let mut pids = ViewerPids::new();
        let child = started(process("a", 1, 60, 50), 200);
        assert_eq!(pids.ppid(&child), 50);
        assert_eq!(pids.pid(&started(process("a", 1, 50, 0), 100)), 50);
        // Only one process was that parent: a later 50 is another.
        assert_eq!(
            pids.pid(&started(process("a", 1, 50, 0), 300)),
            FIRST_STAND_IN
        );
    }
}
