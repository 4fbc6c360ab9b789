//! The relay's QUIC TLS identity: a self-signed certificate whose public key clients pin.
//!
//! The key and certificate are made once (rcgen, SAN `refuge-relay`) and kept in the data
//! directory, so the pin stays the same across restarts. The pin is the lowercase hex SHA-256
//! of the certificate's SubjectPublicKeyInfo DER.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The private key (PKCS#8 DER), mode 0600.
pub const KEY_FILE: &str = "quic-key.der";
/// The self-signed certificate (DER).
pub const CERT_FILE: &str = "quic-cert.der";
/// The pin, one line of hex, for the operator to hand to client policy authors.
pub const PIN_FILE: &str = "quic-spki-pin";
/// The name in the certificate; clients verify the pin, not the name.
pub const SERVER_NAME: &str = "refuge-relay";

/// The certificate and key the QUIC listener serves.
pub struct TlsIdentity {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
    spki_sha256: [u8; 32],
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Lowercase hex SHA-256 of the certificate's SubjectPublicKeyInfo.
    pub fn pin(&self) -> String {
        hex::encode(self.spki_sha256)
    }
}

/// The pin of a DER certificate: SHA-256 of its SubjectPublicKeyInfo.
pub fn spki_sha256_of_cert(cert: &CertificateDer<'_>) -> Result<[u8; 32], String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| e.to_string())?;
    Ok(Sha256::digest(parsed.subject_public_key_info().as_ref()).into())
}

/// Why the identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{present} exists but {missing} is missing")]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("{path} is not a valid {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{cert} does not hold the public key of {key}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot generate the TLS identity: {0}")]
    Generate(#[from] rcgen::Error),
}

impl IdentityError {
    pub fn hint(&self) -> &'static str {
        match self {
            IdentityError::Io { .. } => "check the data directory's permissions and free space",
            IdentityError::Incomplete { .. }
            | IdentityError::Invalid { .. }
            | IdentityError::Mismatch { .. } => {
                "restore both files from a backup; removing both makes a new identity, and every \
                 client pinning the old one will then refuse this relay"
            }
            IdentityError::Generate(_) => "this is a bug; please report it",
        }
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with `mode`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io("rename into place", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", dir))?;
    }
    Ok(())
}

/// Loads the identity from `data_dir`, making it first if neither file exists. Returns whether
/// it was made now. Also (re)writes the pin file.
pub fn load_or_create(data_dir: &Path) -> Result<(TlsIdentity, bool), IdentityError> {
    let key_path = data_dir.join(KEY_FILE);
    let cert_path = data_dir.join(CERT_FILE);
    let (identity, created) = match (key_path.exists(), cert_path.exists()) {
        (true, true) => (load(&key_path, &cert_path)?, false),
        (false, false) => (create(&key_path, &cert_path)?, true),
        (true, false) => {
            return Err(IdentityError::Incomplete {
                present: key_path,
                missing: cert_path,
            });
        }
        (false, true) => {
            return Err(IdentityError::Incomplete {
                present: cert_path,
                missing: key_path,
            });
        }
    };
    write_atomic(
        &data_dir.join(PIN_FILE),
        format!("{}\n", identity.pin()).as_bytes(),
        0o644,
    )?;
    Ok((identity, created))
}

fn create(key_path: &Path, cert_path: &Path) -> Result<TlsIdentity, IdentityError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, SERVER_NAME);
    params.distinguished_name = name;
    let cert = params.self_signed(&key)?;
    let key_der = Zeroizing::new(key.serialize_der());
    // Key first: a crash between the two leaves "key without cert", which is refused loudly
    // rather than silently replaced.
    write_atomic(key_path, &key_der, 0o600)?;
    write_atomic(cert_path, cert.der(), 0o644)?;
    Ok(TlsIdentity {
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key_der.to_vec()),
        spki_sha256: Sha256::digest(key.subject_public_key_info()).into(),
    })
}

fn load(key_path: &Path, cert_path: &Path) -> Result<TlsIdentity, IdentityError> {
    let meta = fs::metadata(key_path).map_err(io("inspect", key_path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %key_path.display(),
            "the QUIC private key is readable by other users; run chmod 600 on it"
        );
    }
    let key_der = Zeroizing::new(fs::read(key_path).map_err(io("read", key_path))?);
    let key = KeyPair::try_from(key_der.as_slice()).map_err(|e| IdentityError::Invalid {
        path: key_path.to_owned(),
        what: "PKCS#8 private key",
        reason: e.to_string(),
    })?;
    let cert = CertificateDer::from(fs::read(cert_path).map_err(io("read", cert_path))?);
    let cert_spki = spki_sha256_of_cert(&cert).map_err(|reason| IdentityError::Invalid {
        path: cert_path.to_owned(),
        what: "DER certificate",
        reason,
    })?;
    let key_spki: [u8; 32] = Sha256::digest(key.subject_public_key_info()).into();
    if cert_spki != key_spki {
        return Err(IdentityError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        });
    }
    Ok(TlsIdentity {
        cert,
        key: PrivatePkcs8KeyDer::from(key_der.to_vec()),
        spki_sha256: key_spki,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_kept_across_restarts_and_the_pin_matches_the_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (first, created) = load_or_create(dir.path()).expect("create");
        assert!(created);
        let (second, created) = load_or_create(dir.path()).expect("load");
        assert!(!created);
        assert_eq!(first.pin(), second.pin());
        assert_eq!(
            first.pin(),
            hex::encode(spki_sha256_of_cert(&second.cert).expect("parses"))
        );
        let pin_file = fs::read_to_string(dir.path().join(PIN_FILE)).expect("pin file");
        assert_eq!(pin_file, format!("{}\n", first.pin()));
        let mode = fs::metadata(dir.path().join(KEY_FILE))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_lone_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create(dir.path()).expect("create");
        fs::remove_file(dir.path().join(CERT_FILE)).expect("remove");
        assert!(matches!(
            load_or_create(dir.path()),
            Err(IdentityError::Incomplete { .. })
        ));
    }

    #[test]
    fn a_certificate_for_another_key_is_refused() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        load_or_create(a.path()).expect("create");
        load_or_create(b.path()).expect("create");
        fs::copy(b.path().join(CERT_FILE), a.path().join(CERT_FILE)).expect("copy");
        assert!(matches!(
            load_or_create(a.path()),
            Err(IdentityError::Mismatch { .. })
        ));
    }
}
