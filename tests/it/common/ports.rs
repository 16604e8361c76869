//! Loopback TCP ports for the servers the tests start (OpenBao, moto, swtpm, PostgreSQL).
//!
//! None of these servers can be handed a listening socket and report back what it bound in a
//! way all of them share (swtpm takes an `fd=`, but its TCTI needs the control port right
//! after the server port, and a test that stops swtpm expects its ports refused, not held by
//! this process), so they are given port numbers. The usual way to pick one (bind port 0,
//! read it, close, pass the number on) races: between the close and the server's bind, the
//! kernel can give the same port to any other bind to port 0 or outgoing connection, in this
//! process (whose tests run on parallel threads) or another.
//!
//! Here ports come from one process-wide counter over a range *below* the kernel's ephemeral
//! range (`net.ipv4.ip_local_port_range`, 32768-60999 by default), so no bind to port 0 and
//! no outgoing connection of any process is ever given one of them, and no two tests of this
//! binary get the same one. The counter starts at an offset derived from the process id, so
//! that test processes running at the same time walk different parts of the range; every port
//! handed out is probed with a bind first, and each server start retries with fresh ports if
//! the server exits at start (a process outside this one took the port).

use std::net::TcpListener;
use std::sync::Mutex;

/// The range ports are handed out from: below the default ephemeral range.
const FIRST: u16 = 20_000;
const END: u16 = 32_000;

/// The next port to hand out; 0 until the first call seeds it from the process id.
static NEXT: Mutex<u16> = Mutex::new(0);

/// `n` consecutive loopback ports, free when probed, that no other caller in this process
/// gets; returns the first. (swtpm's TCTI and a dev OpenBao server use port + 1 too.)
pub fn free_ports(n: u16) -> u16 {
    assert!(n > 0 && n < 16);
    for _ in 0..(END - FIRST) {
        let base = {
            let mut next = NEXT.lock().unwrap_or_else(|e| e.into_inner());
            if *next == 0 {
                *next = FIRST + (std::process::id() % u32::from(END - FIRST)) as u16;
            }
            if *next + n > END {
                *next = FIRST;
            }
            let base = *next;
            *next += n;
            base
        };
        // All of them bound at once, then released together.
        let probes: Vec<_> = (0..n).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect();
        if probes.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {n} free consecutive loopback ports in {FIRST}..{END}");
}

/// One loopback port, as [`free_ports`].
pub fn free_port() -> u16 {
    free_ports(1)
}
