//! Process limits: a gateway or a load generator with thousands of open
//! sockets needs as many file descriptors, and the usual soft limit is 1,024.

/// File descriptors kept for everything that is not a connection.
const SPARE: u64 = 256;

/// Raises the open-files soft limit as far as the hard limit allows; fails
/// when that is still too few for `connections` sockets.
pub fn raise_open_files(connections: usize) -> anyhow::Result<u64> {
    let limit = rlimit::increase_nofile_limit(u64::MAX)?;
    let needed = connections as u64 + SPARE;
    anyhow::ensure!(
        limit >= needed,
        "{connections} connections need {needed} open files, but the limit is {limit} \
         (raise it with `ulimit -n`)"
    );
    Ok(limit)
}

/// Connections the gateway can keep open: `wanted`, or fewer when the open-files
/// limit would run out first (then a new connection gets a clean 503, not EMFILE).
pub fn connection_cap(wanted: usize) -> usize {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, _)) if soft != rlimit::INFINITY => {
            let room = soft.saturating_sub(SPARE).max(1);
            wanted.min(usize::try_from(room).unwrap_or(usize::MAX))
        }
        _ => wanted,
    }
}
