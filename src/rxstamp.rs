//! Kernel receive timestamps of TCP sockets (`SO_TIMESTAMPNS`): when a
//! segment arrived, rather than when a thread got round to reading it.
//!
//! The clock exchange stamps a ping's and a pong's arrival (t2, t4). Read
//! times include the reading thread's wake-up, which on a busy machine
//! differs between the two ends by microseconds and biases the offset by
//! half the difference; the kernel's timestamp, taken as the segment
//! enters the receive path, does not. Linux gives them for TCP (not for
//! Unix stream sockets: there the read time is used). The kernel stamps
//! with CLOCK_REALTIME; it is turned into this process's CLOCK_MONOTONIC
//! (of its time namespace) with a pair of clock reads taken right after,
//! bracketed (`clock::monotonic_and_unix_ns`). Bare, a pair read across a
//! preemption moved the stamp earlier by as long as the thread waited,
//! and so made the round trip look shorter than it was: the estimate,
//! which trusts the shortest round trips, picked exactly those samples.

// The socket options and `recvmsg` need libc; each unsafe block says why
// it holds.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;

use crate::clock;

/// A receive timestamp older than this (or in the future) is not
/// believed: the realtime clock may have been stepped in between. (A read
/// that late makes a round trip no estimate would pick anyway.)
const MAX_AGE_NS: u64 = 1_000_000_000;

/// Asks the kernel to timestamp what `socket` receives (from a moment
/// later: the first segments may still come without).
pub fn enable(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is open for the borrow's duration; `on` is a valid
    // c_int whose size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads into `buf` like `read`; also returns the CLOCK_MONOTONIC time
/// (ns) the last byte read arrived, if the kernel said (see `enable`):
/// `None` for a socket without timestamping, for a read that brought none
/// (the first segments after `enable`), or for an implausible stamp.
pub fn recv(socket: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    // u64s keep the control buffer aligned for cmsghdr; 128 bytes hold
    // the one timestamp message (32) with room to spare.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data (integers and raw pointers); all-zero
    // is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (covering exactly `buf`) and at
    // `control` (of the length given), all alive and exclusively borrowed
    // for the call; the fd is open for the borrow of `socket`.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let stamp = received_unix_ns(&msg).and_then(to_monotonic_ns);
    Ok((n as usize, stamp))
}

/// A CLOCK_REALTIME time of the recent past as CLOCK_MONOTONIC: now on
/// the monotonic clock minus its age on the realtime clock. The kernel
/// stamps with CLOCK_REALTIME, which a time namespace does not shift;
/// the monotonic time is this namespace's.
fn to_monotonic_ns(received_unix_ns: u64) -> Option<u64> {
    let (now_monotonic, now_unix) = clock::monotonic_and_unix_ns();
    let age = now_unix
        .checked_sub(received_unix_ns)
        .filter(|&age| age <= MAX_AGE_NS)?;
    now_monotonic.checked_sub(age)
}

/// The `SCM_TIMESTAMPNS` control message of `msg`, as Unix-epoch ns.
fn received_unix_ns(msg: &libc::msghdr) -> Option<u64> {
    // SAFETY: `msg` was filled by recvmsg, which set msg_controllen to
    // what it wrote into msg_control; CMSG_FIRSTHDR/CMSG_NXTHDR stay
    // within those bounds and return null past the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/NXTHDR lies whole
        // inside the control buffer, which is aligned for cmsghdr.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_TIMESTAMPNS {
            // SAFETY: an SCM_TIMESTAMPNS message carries one timespec at
            // CMSG_DATA, inside the control buffer; read_unaligned needs
            // no alignment.
            let ts: libc::timespec =
                unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
            let secs = u64::try_from(ts.tv_sec).ok()?;
            let nanos = u64::try_from(ts.tv_nsec).ok()?;
            return secs.checked_mul(1_000_000_000)?.checked_add(nanos);
        }
        // SAFETY: as for CMSG_FIRSTHDR; `cmsg` is a header of `msg`.
        cmsg = unsafe { libc::CMSG_NXTHDR(msg, cmsg) };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (receiver, _) = listener.accept().unwrap();
        (sender, receiver)
    }

    #[test]
    fn tcp_reads_come_with_the_time_they_arrived() {
        let (mut sender, receiver) = tcp_pair();
        enable(&receiver).unwrap();
        // The kernel turns timestamping on a moment later (a deferred
        // work item): the first segments may come without.
        for _ in 0..50 {
            let sent = clock::monotonic_ns();
            sender.write_all(b"ping").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            let mut buf = [0u8; 16];
            let (n, stamp) = recv(&receiver, &mut buf).unwrap();
            let read = clock::monotonic_ns();
            assert_eq!(&buf[..n], b"ping");
            if let Some(stamp) = stamp {
                // It arrived at once, not when it was read 20 ms later.
                assert!(stamp >= sent.saturating_sub(50_000), "{stamp} vs {sent}");
                assert!(stamp + 10_000_000 < read, "{stamp} vs {read}");
                return;
            }
        }
        panic!("no kernel receive timestamp in 50 tries");
    }

    #[test]
    fn without_timestamping_reads_say_nothing() {
        let (mut sender, receiver) = tcp_pair();
        sender.write_all(b"ping").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(recv(&receiver, &mut buf).unwrap(), (4, None));

        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"pong").unwrap();
        assert_eq!(recv(&b, &mut buf).unwrap(), (4, None));
    }

    #[test]
    fn errors_and_the_end_of_the_stream_are_reported_like_read() {
        let (sender, receiver) = tcp_pair();
        enable(&receiver).unwrap();
        drop(sender);
        let mut buf = [0u8; 16];
        assert_eq!(recv(&receiver, &mut buf).unwrap(), (0, None));

        let (_sender, receiver) = tcp_pair();
        receiver.set_nonblocking(true).unwrap();
        let e = recv(&receiver, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn stale_or_future_stamps_are_not_believed() {
        let now = clock::unix_ns();
        assert!(to_monotonic_ns(now - 2 * MAX_AGE_NS).is_none());
        assert!(to_monotonic_ns(now + MAX_AGE_NS).is_none());
        let recent = to_monotonic_ns(now - 1_000_000).unwrap();
        let monotonic = clock::monotonic_ns();
        assert!(recent < monotonic && monotonic - recent < 100_000_000);
    }
}
