//! Sizes, counts and durations as annotations write them.

use std::time::Duration;

/// Bytes: a number with an optional `Ki`, `Mi`, `Gi` (powers of 1024) or `K`, `M`, `G`
/// (powers of 1000) suffix, as Kubernetes writes quantities. Zero is refused.
pub fn parse_bytes(value: &str) -> Result<u64, String> {
    const UNITS: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    let (number, unit) = UNITS
        .iter()
        .find_map(|(suffix, unit)| value.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((value, 1));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{value:?} is not a size (a number of bytes, or with Ki, Mi, Gi)"))?;
    match number.checked_mul(unit) {
        Some(0) => Err("a size of zero".to_string()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{value:?} is too large")),
    }
}

/// Where to listen: `ADDRESS:PORT` (an IPv6 address in brackets), or a bare `PORT` for every
/// IPv4 address (`0.0.0.0:PORT`). Port zero is refused.
pub fn parse_listen_address(value: &str) -> Result<std::net::SocketAddr, String> {
    let address = match value.parse::<u16>() {
        Ok(port) => std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        Err(_) => value.parse().map_err(|_| {
            format!("{value:?} is not an address to listen on (ADDRESS:PORT, or PORT)")
        })?,
    };
    if address.port() == 0 {
        return Err("port 0 picks no port".to_string());
    }
    Ok(address)
}

/// A positive count.
pub fn parse_count(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(0) => Err("a count of zero".to_string()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("{value:?} is not a positive whole number")),
    }
}

/// A duration: a whole number with `ms`, `s`, `m` or `h`. Zero is refused.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration (a number with ms, s, m or h)");
    let (number, scale) = if let Some(n) = value.strip_suffix("ms") {
        (n, Duration::from_millis(1))
    } else if let Some(n) = value.strip_suffix('s') {
        (n, Duration::from_secs(1))
    } else if let Some(n) = value.strip_suffix('m') {
        (n, Duration::from_secs(60))
    } else if let Some(n) = value.strip_suffix('h') {
        (n, Duration::from_secs(3600))
    } else {
        return Err(bad());
    };
    let number: u32 = number.parse().map_err(|_| bad())?;
    if number == 0 {
        return Err("a duration of zero".to_string());
    }
    Ok(scale * number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_counts_and_durations() {
        assert_eq!(parse_bytes("32Mi"), Ok(32 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "0", "1.5Mi", "-1", "12Ti", "99999999999999999Gi"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_count("10"), Ok(10));
        assert!(parse_count("0").is_err() && parse_count("-1").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["10", "0s", "1.5s", "s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
