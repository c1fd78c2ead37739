//! Local access control: the socket file's owner, group and mode, and each client's tier from
//! its credentials (SO_PEERCRED), modelled on tailscaled's peer-credential tiers.
//!
//! Names in `[access]` are resolved once, when the daemon starts ([`resolve`]); a name that does
//! not exist stops the daemon with the key's name. After that, deciding a client's tier is a pure
//! function of its uid and groups ([`AccessPolicy::decide`]), tested below.

use std::collections::HashSet;
#[cfg(unix)]
use std::path::Path;

use peerix_ipc_proto::Access;

use crate::config::access::AccessConfig;
use crate::error::DaemonError;

/// Who gets which tier, by numeric id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Users with full control.
    pub full_uids: HashSet<u32>,
    /// Groups whose members have full control.
    pub full_gids: HashSet<u32>,
    /// Users that may only observe.
    pub read_only_uids: HashSet<u32>,
    /// Groups whose members may only observe.
    pub read_only_gids: HashSet<u32>,
}

impl AccessPolicy {
    /// The tier of a client with user `uid` in `gids` (primary and supplementary), or `None`
    /// when it is in no list. There is no shortcut for the daemon's own user or root: they are
    /// full only because the unset `full_users` lists them ([`resolve`]).
    pub fn decide(&self, uid: u32, gids: &[u32]) -> Option<Access> {
        let in_groups = |set: &HashSet<u32>| gids.iter().any(|g| set.contains(g));
        if self.full_uids.contains(&uid) || in_groups(&self.full_gids) {
            Some(Access::Full)
        } else if self.read_only_uids.contains(&uid) || in_groups(&self.read_only_gids) {
            Some(Access::ReadOnly)
        } else {
            None
        }
    }
}

/// What to do to the socket file once it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPerms {
    /// New owner, if any.
    pub uid: Option<u32>,
    /// New group, if any.
    pub gid: Option<u32>,
    /// File mode bits.
    pub mode: u32,
}

/// The access configuration with every name resolved.
#[derive(Debug, Clone)]
pub struct ResolvedAccess {
    /// Who gets which tier.
    pub policy: AccessPolicy,
    /// The socket file's owner, group and mode.
    pub socket: SocketPerms,
}

/// A connected client's credentials, as the kernel reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCreds {
    /// Process id, for logs.
    pub pid: Option<i32>,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id, then the user's supplementary groups.
    pub gids: Vec<u32>,
}

/// Resolves `[access]`: names to ids, and the defaults that depend on who the daemon runs as.
#[cfg(unix)]
pub fn resolve(cfg: &AccessConfig) -> Result<ResolvedAccess, DaemonError> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    let self_uid = unsafe { libc::geteuid() };
    let mode = cfg.mode()?;
    let uid = cfg
        .socket_owner
        .as_deref()
        .map(|u| user_id(u, "access.socket_owner"))
        .transpose()?;
    let gid = cfg
        .socket_group
        .as_deref()
        .map(|g| group_id(g, "access.socket_group"))
        .transpose()?;
    let users = |list: &[String], key: &str| -> Result<HashSet<u32>, DaemonError> {
        list.iter().map(|u| user_id(u, key)).collect()
    };
    let groups = |list: &[String], key: &str| -> Result<HashSet<u32>, DaemonError> {
        list.iter().map(|g| group_id(g, key)).collect()
    };
    let full_uids = match &cfg.full_users {
        Some(list) => users(list, "access.full_users")?,
        None => HashSet::from([self_uid, 0]),
    };
    let full_gids = match &cfg.full_groups {
        Some(list) => groups(list, "access.full_groups")?,
        None => gid.into_iter().collect(),
    };
    Ok(ResolvedAccess {
        policy: AccessPolicy {
            full_uids,
            full_gids,
            read_only_uids: users(&cfg.read_only_users, "access.read_only_users")?,
            read_only_gids: groups(&cfg.read_only_groups, "access.read_only_groups")?,
        },
        socket: SocketPerms { uid, gid, mode },
    })
}

/// Named pipes carry no Unix credentials: on Windows the pipe's default security (its creator
/// and administrators) is the access control, and every client that can open it has full
/// control. `[access]` lists are refused there rather than silently ignored.
#[cfg(windows)]
pub fn resolve(cfg: &AccessConfig) -> Result<ResolvedAccess, DaemonError> {
    let set = cfg.socket_owner.is_some()
        || cfg.socket_group.is_some()
        || cfg.socket_mode.is_some()
        || cfg.full_users.is_some()
        || cfg.full_groups.is_some()
        || !cfg.read_only_users.is_empty()
        || !cfg.read_only_groups.is_empty();
    if set {
        return Err(DaemonError::Config(
            "access: not supported on Windows yet (the named pipe's default security applies); \
             remove the [access] section"
                .into(),
        ));
    }
    Ok(ResolvedAccess {
        policy: AccessPolicy {
            full_uids: HashSet::from([0]),
            ..Default::default()
        },
        socket: SocketPerms {
            uid: None,
            gid: None,
            mode: 0o600,
        },
    })
}

/// A numeric uid, or the uid of a user name.
#[cfg(unix)]
fn user_id(name: &str, key: &str) -> Result<u32, DaemonError> {
    if let Ok(id) = name.trim().parse::<u32>() {
        return Ok(id);
    }
    lookup(name, key, "user", |c, buf| {
        // SAFETY: passwd is plain data; getpwnam_r fills it and points its strings into `buf`,
        // which outlives the call; `result` is set to null or to `&pwd`.
        unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result = std::ptr::null_mut();
            let r = libc::getpwnam_r(c, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
            (r, (!result.is_null()).then_some(pwd.pw_uid))
        }
    })
}

/// A numeric gid, or the gid of a group name.
#[cfg(unix)]
fn group_id(name: &str, key: &str) -> Result<u32, DaemonError> {
    if let Ok(id) = name.trim().parse::<u32>() {
        return Ok(id);
    }
    lookup(name, key, "group", |c, buf| {
        // SAFETY: as in `user_id`, with getgrnam_r and a group record.
        unsafe {
            let mut grp: libc::group = std::mem::zeroed();
            let mut result = std::ptr::null_mut();
            let r = libc::getgrnam_r(c, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result);
            (r, (!result.is_null()).then_some(grp.gr_gid))
        }
    })
}

/// Runs a `get*nam_r` call with a growing buffer; a name that is not in the database is an
/// error naming the key.
#[cfg(unix)]
fn lookup(
    name: &str,
    key: &str,
    what: &str,
    call: impl Fn(*const libc::c_char, &mut [libc::c_char]) -> (libc::c_int, Option<u32>),
) -> Result<u32, DaemonError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| DaemonError::Config(format!("{key}: {name:?} contains a NUL byte")))?;
    let mut size = 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        match call(c.as_ptr(), &mut buf) {
            (libc::ERANGE, _) if size < 1 << 20 => size *= 4,
            (0, Some(id)) => return Ok(id),
            (0, None) => {
                let hint = if what == "group" {
                    format!("create it (groupadd --system {name}) or name an existing group")
                } else {
                    "name an existing user or a numeric uid".to_string()
                };
                return Err(DaemonError::Config(format!(
                    "{key}: {what} {name:?} does not exist; {hint}"
                )));
            }
            (e, _) => {
                return Err(DaemonError::Config(format!(
                    "{key}: looking up {what} {name:?}: {}",
                    std::io::Error::from_raw_os_error(e)
                )))
            }
        }
    }
}

/// Gives the socket file its owner, group and mode.
#[cfg(unix)]
pub fn apply_socket_perms(path: &Path, p: SocketPerms) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    if p.uid.is_some() || p.gid.is_some() {
        std::os::unix::fs::chown(path, p.uid, p.gid).map_err(|source| DaemonError::Io {
            context: format!(
                "giving the socket {} to access.socket_owner/socket_group (uid {:?}, gid {:?}); \
                 only root may give a file away, and only to a group the daemon's user is in",
                path.display(),
                p.uid,
                p.gid
            ),
            source,
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(p.mode)).map_err(|source| {
        DaemonError::Io {
            context: format!("setting access.socket_mode on {}", path.display()),
            source,
        }
    })
}

/// The directory a daemon creates for its socket: owner-only, plus search (x) for the group or
/// others when the socket mode opens the socket to them, else they could not reach it.
pub fn socket_dir_mode(socket_mode: u32) -> u32 {
    let mut m = 0o700;
    if socket_mode & 0o060 != 0 {
        m |= 0o010;
    }
    if socket_mode & 0o006 != 0 {
        m |= 0o001;
    }
    m
}

/// The credentials of the process at the other end of an accepted connection, with the
/// supplementary groups of its user (SO_PEERCRED carries only the effective ids; the group
/// database says which other groups the user is in).
#[cfg(unix)]
pub fn client_creds(
    stream: &interprocess::local_socket::tokio::Stream,
) -> std::io::Result<ClientCreds> {
    use interprocess::local_socket::traits::StreamCommon as _;
    let c = stream.peer_creds()?;
    let (Some(uid), Some(gid)) = (c.euid(), c.egid()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the kernel gave no user or group id for this client",
        ));
    };
    let mut gids = vec![gid];
    for g in supplementary_groups(uid, gid) {
        if !gids.contains(&g) {
            gids.push(g);
        }
    }
    Ok(ClientCreds {
        pid: c.pid(),
        uid,
        gids,
    })
}

/// The groups the user `uid` is a member of in the group database (empty if it has no name).
#[cfg(target_os = "linux")]
fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwuid_r fills `pwd`, pointing its strings into `buf`, which lives until the end
    // of this function; `name` is only used while `buf` is alive.
    let name = unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result = std::ptr::null_mut();
        let r = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if r != 0 || result.is_null() {
            return Vec::new();
        }
        pwd.pw_name
    };
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `name` points into `buf` (alive); `groups` has room for `n` entries, and
        // getgrouplist writes at most `n` and sets `n` to the number it needs.
        let r = unsafe { libc::getgrouplist(name, gid, groups.as_mut_ptr(), &mut n) };
        if r >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n as usize <= groups.len() || groups.len() >= 65_536 {
            return Vec::new();
        }
        groups.resize(n as usize, 0);
    }
}

/// Elsewhere only the effective group counts.
#[cfg(all(unix, not(target_os = "linux")))]
fn supplementary_groups(_uid: u32, _gid: u32) -> Vec<u32> {
    Vec::new()
}

/// No Unix credentials on a named pipe (see the Windows [`resolve`]): uid 0 stands for "any
/// client that could open the pipe", which that policy gives full control.
#[cfg(windows)]
pub fn client_creds(
    _stream: &interprocess::local_socket::tokio::Stream,
) -> std::io::Result<ClientCreds> {
    Ok(ClientCreds {
        pid: None,
        uid: 0,
        gids: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AccessPolicy {
        AccessPolicy {
            full_uids: HashSet::from([1000]),
            full_gids: HashSet::from([10]),
            read_only_uids: HashSet::from([2000]),
            read_only_gids: HashSet::from([20]),
        }
    }

    #[test]
    fn full_beats_read_only_and_nobody_else_gets_in() {
        let p = policy();
        assert_eq!(p.decide(1000, &[20]), Some(Access::Full));
        assert_eq!(p.decide(3000, &[3000, 10]), Some(Access::Full));
        assert_eq!(p.decide(2000, &[2000]), Some(Access::ReadOnly));
        assert_eq!(p.decide(3000, &[3000, 20]), Some(Access::ReadOnly));
        assert_eq!(p.decide(3000, &[3000]), None);
        assert_eq!(p.decide(0, &[0]), None, "root is not full unless listed");
    }

    #[cfg(unix)]
    #[test]
    fn unset_full_users_means_the_daemon_user_and_root_and_names_must_exist() {
        let r = resolve(&AccessConfig::default()).expect("defaults resolve");
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        assert!(r.policy.full_uids.contains(&me) && r.policy.full_uids.contains(&0));
        assert_eq!(r.socket.mode, 0o600);
        let cfg = AccessConfig {
            socket_group: Some("no-such-group-peerix-test".into()),
            ..Default::default()
        };
        let e = resolve(&cfg).expect_err("unknown group").to_string();
        assert!(
            e.contains("access.socket_group") && e.contains("does not exist"),
            "{e}"
        );
        let cfg = AccessConfig {
            read_only_users: vec!["no-such-user-peerix-test".into()],
            ..Default::default()
        };
        let e = resolve(&cfg).expect_err("unknown user").to_string();
        assert!(e.contains("access.read_only_users"), "{e}");
    }

    #[test]
    fn the_socket_directory_is_searchable_by_whom_the_socket_is_opened_to() {
        assert_eq!(socket_dir_mode(0o600), 0o700);
        assert_eq!(socket_dir_mode(0o660), 0o710);
        assert_eq!(socket_dir_mode(0o666), 0o711);
    }
}
