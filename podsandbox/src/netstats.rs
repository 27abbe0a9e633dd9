//! A pod's network counters: the interfaces of its network namespace as the kernel's
//! `/proc/net/dev` shows them from inside it. Read on a short-lived thread that enters the pinned
//! namespace (see [`crate::Kernel::read_net_dev`]), so no daemon thread ever changes namespace.

/// One interface's cumulative counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
}

/// Parses `/proc/net/dev` (two header lines, then `name: 16 counters`); the loopback is left out,
/// as the kubelet and cAdvisor leave it out of a pod's network usage.
pub fn parse_net_dev(text: &str) -> Vec<InterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let n: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs ...
            (n.len() >= 16).then(|| InterfaceStats {
                name: name.to_owned(),
                rx_bytes: n[0],
                rx_errors: n[2],
                tx_bytes: n[8],
                tx_errors: n[10],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_gives_bytes_and_errors_per_interface_without_loopback() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 5000000    4000    3    0    0     0          0         0   200000    1500    7    0    0     0       0          0
";
        assert_eq!(
            parse_net_dev(text),
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 5_000_000,
                rx_errors: 3,
                tx_bytes: 200_000,
                tx_errors: 7,
            }]
        );
        assert!(parse_net_dev("garbage\nmore\n  eth0: 1 2\n").is_empty());
    }
}
