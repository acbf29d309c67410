//! The pids viewers are given. Perfetto and Chrome JSON viewers know a
//! process by its pid alone, so two processes with one pid — on two hosts,
//! in two containers of one host (each has its own pid 1), or one pid
//! reused — would be drawn as one process, their threads mixed. A pid is
//! unique only within its `PidSpace` (host, boot, pid namespace).
//!
//! So each pid a viewer sees stands for one (space, pid) pair: the first
//! space to use a number keeps it; a later space using the same number gets
//! a stand-in from `FIRST_STAND_IN` up (above any Linux pid: `pid_max` is at
//! most 2^22), skipping numbers already taken. Parent pids go through the
//! same map, so a parent link stays inside its space. The process's own pid
//! stays in its name (`<session> (pid N)`) and in the writers' metadata,
//! where readers take it back from. Thread ids need no stand-ins: viewers
//! key a thread by its process and tid.

use std::collections::HashMap;

use crate::timeline::{PidSpace, ProcessInfo};

/// The first stand-in pid: Linux pids are below 2^22 (`PID_MAX_LIMIT`).
pub const FIRST_STAND_IN: u32 = 1 << 22;

/// Which viewer pid stands for which (space, pid); see the module docs.
#[derive(Debug, Default)]
pub struct ViewerPids {
    shown: HashMap<(PidSpace, u32), u32>,
    taken: HashMap<u32, PidSpace>,
    next_stand_in: u32,
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
        self.shown(process.pid_space(), process.pid)
    }

    /// The pid viewers are given for `process`'s parent; 0 (none) stays 0.
    pub fn ppid(&mut self, process: &ProcessInfo) -> u32 {
        if process.ppid == 0 {
            return 0;
        }
        self.shown(process.pid_space(), process.ppid)
    }

    fn shown(&mut self, space: PidSpace, pid: u32) -> u32 {
        if let Some(&shown) = self.shown.get(&(space.clone(), pid)) {
            return shown;
        }
        let mut shown = pid;
        while self.taken.contains_key(&shown) {
            shown = self.next_stand_in;
            // Wrapping (never: one stand-in per process) starts again at
            // the first, whose taken numbers the loop skips.
            self.next_stand_in = self.next_stand_in.wrapping_add(1).max(FIRST_STAND_IN);
        }
        self.taken.insert(shown, space.clone());
        self.shown.insert((space, pid), shown);
        shown
    }
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
}
