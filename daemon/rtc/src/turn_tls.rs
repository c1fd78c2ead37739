//! How `turns:` servers' certificates are verified: the system's roots plus an optional CA
//! file (`[turn_tls] ca_file` in peerixd).
//!
//! The CA file is read and checked when it is configured, so a bad file is refused at start
//! or reload with what to do. The system's roots are read only when a `turns:` server is
//! first dialled: loading them opens and parses every file in the system's certificate
//! directories (~300 on Debian, 10-20 ms and a few hundred KiB of heap), which a daemon that
//! never uses TURN over TLS, the usual case, should not pay for at every start.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// The configured CA certificates, and the settings built from them and the system's roots
/// once a `turns:` server was dialled.
struct State {
    extra: Vec<CertificateDer<'static>>,
    /// Bumped by every [`configure_tls`]: settings built from an older configuration while
    /// it changed are not kept.
    generation: u64,
    built: Option<Arc<rustls::ClientConfig>>,
}

static STATE: Mutex<State> = Mutex::new(State {
    extra: Vec::new(),
    generation: 0,
    built: None,
});

fn state() -> MutexGuard<'static, State> {
    match STATE.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Why the TLS settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TurnTlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use {path} as the TURN servers' CA: {reason}; give a PEM file with the CA certificate (or the server's self-signed certificate)")]
    CaFile {
        /// The configured path.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the settings.
    #[error("TLS settings for TURN: {0}")]
    Tls(#[from] rustls::Error),
    /// The task that reads the system's roots did not finish.
    #[error("reading the system's CA certificates for TURN over TLS failed: {0}")]
    Roots(String),
}

/// Sets how `turns:` servers' certificates are verified: against the system's roots plus the
/// certificates in `ca_file` (PEM), for every connection made from now on. Without a call,
/// the system's roots alone. Reads `ca_file` now; the system's roots wait for the first
/// `turns:` server.
pub fn configure_tls(ca_file: Option<&Path>) -> Result<(), TurnTlsError> {
    let extra = match ca_file {
        Some(path) => read_ca_file(path)?,
        None => Vec::new(),
    };
    let mut s = state();
    s.extra = extra;
    s.generation += 1;
    s.built = None;
    Ok(())
}

/// The certificates of a CA file, each one accepted as a trust anchor.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TurnTlsError> {
    use rustls::pki_types::pem::PemObject;
    let err = |reason: String| TurnTlsError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in it".into()));
    }
    // Checked now, so that a certificate rustls would refuse stops the start or the reload.
    let mut probe = rustls::RootCertStore::empty();
    for cert in &certs {
        probe
            .add(cert.clone())
            .map_err(|e| err(format!("a certificate was refused: {e}")))?;
    }
    Ok(certs)
}

/// The settings for a `turns:` connection, built on first use; the system's roots are read
/// on the blocking pool, not on the calling runtime's thread, which drives connections.
pub(crate) async fn tls_config() -> Result<Arc<rustls::ClientConfig>, TurnTlsError> {
    let (extra, generation) = {
        let s = state();
        if let Some(built) = &s.built {
            return Ok(Arc::clone(built));
        }
        (s.extra.clone(), s.generation)
    };
    let built = tokio::task::spawn_blocking(move || build_tls(extra))
        .await
        .map_err(|e| TurnTlsError::Roots(e.to_string()))??;
    let mut s = state();
    if s.generation == generation {
        s.built.get_or_insert_with(|| Arc::clone(&built));
    }
    Ok(built)
}

fn build_tls(
    extra: Vec<CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, TurnTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system stores are skipped: a private CA may be all this host needs.
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    for cert in extra {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether settings are built and kept (tests only: they share the process-wide state).
#[cfg(test)]
pub(crate) fn is_built() -> bool {
    state().built.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("turn-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate\n").expect("write");
        let err = configure_tls(Some(&dir)).expect_err("no certificate");
        let _ = std::fs::remove_file(&dir);
        assert!(err.to_string().contains("PEM"), "{err}");
    }

    /// Configuring reads no system root; the first `turns:` server builds the settings once
    /// and later ones share them, until the configuration changes.
    #[test]
    fn the_system_roots_wait_for_the_first_turns_server() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        configure_tls(None).expect("configure");
        assert!(!is_built(), "settings built before any turns: server");
        let first = rt.block_on(tls_config()).expect("settings");
        assert!(is_built(), "settings not kept");
        let second = rt.block_on(tls_config()).expect("settings");
        assert!(Arc::ptr_eq(&first, &second), "built twice");
        configure_tls(None).expect("configure again");
        assert!(!is_built(), "settings of the old configuration kept");
    }
}
