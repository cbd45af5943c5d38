//! The limits a run of many nodes meets: open files (raised as far as allowed) and local
//! ports, both checked before a run opens anything, so that a run too large for this machine
//! fails with a message instead of halfway through.

use crate::error::{Error, Result};

/// Descriptors kept free for the runtime, the listener and whatever the caller has open.
const HEADROOM: u64 = 64;

/// Raises the soft open-files limit to the hard limit and returns the new soft limit.
pub fn raise_open_files_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, std::ptr::from_mut(&mut limit)) != 0 {
                return u64::MAX;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, std::ptr::from_ref(&raised)) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
        }
        // rlim_t is u64 on Linux and macOS; the conversion keeps other targets building.
        #[allow(clippy::useless_conversion)]
        u64::from(limit.rlim_cur)
    }
    #[cfg(not(unix))]
    {
        u64::MAX
    }
}

/// How many descriptors this process has open now (0 where that cannot be read).
pub fn open_files() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count() as u64)
}

/// Checks that `needed` more descriptors fit under the limit, raising it first.
///
/// # Errors
/// [`Error::TooManyFiles`] naming what is needed and what is available.
pub fn ensure_open_files(needed: u64) -> Result<()> {
    let limit = raise_open_files_limit();
    let available = limit.saturating_sub(open_files()).saturating_sub(HEADROOM);
    if needed > available {
        return Err(Error::TooManyFiles { needed, available });
    }
    Ok(())
}

/// How many local ports outgoing connections may use (Linux's `net.ipv4.ip_local_port_range`),
/// or `None` where that cannot be read.
fn local_ports() -> Option<u64> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut bounds = range.split_whitespace().map(str::parse::<u64>);
    match (bounds.next()?.ok()?, bounds.next()?.ok()?) {
        (low, high) if high >= low => Some(high - low + 1),
        _ => None,
    }
}

/// Checks that `needed` outgoing connections to one address can each have a local port.
///
/// # Errors
/// [`Error::TooFewPorts`] naming what is needed and what the range allows.
pub fn ensure_local_ports(needed: u64) -> Result<()> {
    match local_ports() {
        Some(available) if needed > available => Err(Error::TooFewPorts { needed, available }),
        _ => Ok(()),
    }
}
