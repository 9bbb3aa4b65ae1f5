//! Host ports for functions. With host networking a port is the container's whole address, so a
//! port is taken if any deployment records it or if anything on the host is bound to it.

use std::{collections::HashSet, net::TcpListener, ops::RangeInclusive};

/// A port in `range` that no recorded endpoint uses and nothing on the host listens on. The
/// start is random so concurrent pickers rarely collide; callers hold a lock across pick and
/// record so they never do.
pub fn pick_free_port(range: &RangeInclusive<u16>, host: &str, in_use: &[String]) -> Option<u16> {
    let taken: HashSet<u16> = in_use
        .iter()
        .filter_map(|e| e.rsplit_once(':'))
        .filter(|(h, _)| *h == host)
        .filter_map(|(_, p)| p.parse().ok())
        .collect();
    let span = u32::from(range.end() - range.start()) + 1;
    let offset = rand::random::<u32>() % span;
    (0..span)
        .map(|i| *range.start() + ((offset + i) % span) as u16)
        .find(|port| !taken.contains(port) && TcpListener::bind((host, *port)).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_recorded_and_bound_ports() {
        let bound = TcpListener::bind("127.0.0.1:0").unwrap();
        let bound_port = bound.local_addr().unwrap().port();
        let range = bound_port..=bound_port;
        assert_eq!(pick_free_port(&range, "127.0.0.1", &[]), None);
        drop(bound);
        assert_eq!(pick_free_port(&range, "127.0.0.1", &[]), Some(bound_port));
        let recorded = vec![format!("127.0.0.1:{bound_port}")];
        assert_eq!(pick_free_port(&range, "127.0.0.1", &recorded), None);
    }
}
