//! The files a pod's containers bind-mount: `hostname`, `hosts` and `resolv.conf`. Their contents
//! are built here from validated input; nothing from the pod spec can add a line of its own.

use std::net::IpAddr;

use crate::{DnsConfig, Error};

fn invalid(what: &str, reason: String) -> Error {
    Error::InvalidConfig(format!("{what}: {reason}"))
}

/// A hostname as the kernel and RFC 1123 accept it: at most 64 bytes of letters, digits, `-`, `.`.
pub fn validate_hostname(h: &str) -> Result<(), Error> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "hostname",
            format!("{h:?} is not a valid hostname"),
        ))
    }
}

/// Checks the DNS configuration: servers are addresses, searches and options single words.
pub fn validate_dns(dns: &DnsConfig) -> Result<(), Error> {
    for s in &dns.servers {
        s.parse::<IpAddr>()
            .map_err(|_| invalid("dns server", format!("{s:?} is not an IP address")))?;
    }
    let word = |s: &String| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_graphic() && c != '#' && c != ';')
    };
    if let Some(s) = dns.searches.iter().find(|s| !word(s)) {
        return Err(invalid("dns search", format!("{s:?} is not a domain")));
    }
    if let Some(o) = dns.options.iter().find(|o| !word(o)) {
        return Err(invalid("dns option", format!("{o:?} is not an option")));
    }
    Ok(())
}

pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// `/etc/hosts` of a pod with its own network: localhost entries and the pod's own name.
pub fn hosts_file(hostname: &str, ips: &[IpAddr]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    for ip in ips {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

/// `resolv.conf` from the pod's DNS configuration.
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        s.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        validate_dns(&dns).unwrap();
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn no_injected_lines() {
        let mut dns = DnsConfig {
            servers: vec!["10.0.0.1\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        assert!(validate_dns(&dns).is_err());
        dns.servers.clear();
        dns.searches.push("a\nnameserver 6.6.6.6".into());
        assert!(validate_dns(&dns).is_err());
        dns.searches = vec!["ok.local".into()];
        dns.options.push("ndots:5 rotate".into());
        assert!(validate_dns(&dns).is_err());
        assert!(validate_hostname("web-0").is_ok());
        assert!(validate_hostname("web\n127.0.0.1 evil").is_err());
        assert!(validate_hostname(&"a".repeat(65)).is_err());
    }

    #[test]
    fn hosts_names_the_pod_ip() {
        let h = hosts_file("web-0", &["10.88.0.5".parse().unwrap()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.88.0.5\tweb-0\n"));
    }
}
