//! Authenticating the relay's QUIC certificate by its pin alone.
//!
//! The relay uses a self-signed certificate; there is no CA and no name check. The only thing
//! that authenticates it is the SHA-256 of its SubjectPublicKeyInfo, which the client gets
//! out of band (from the operator, later from the signed client policy). Everything else in
//! the certificate (names, validity dates, issuer) is ignored; handshake signatures are still
//! verified with the certificate's key, using the ring provider's algorithms, so a party that
//! merely copies the certificate cannot complete the handshake.

use super::endpoint::SpkiPin;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, SignatureScheme};
use std::sync::Mutex;

/// A rustls verifier that accepts exactly one SPKI pin.
#[derive(Debug)]
pub struct PinVerifier {
    pin: SpkiPin,
    algorithms: WebPkiSupportedAlgorithms,
    /// The SPKI hash of a certificate that did not match, kept so that the caller can report a
    /// pin mismatch precisely (the TLS error that reaches quinn is only an alert).
    mismatch: Mutex<Option<[u8; 32]>>,
}

impl PinVerifier {
    pub fn new(pin: SpkiPin) -> Self {
        Self {
            pin,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
            mismatch: Mutex::new(None),
        }
    }

    /// The SPKI hash of the last certificate refused for not matching the pin.
    pub fn mismatch(&self) -> Option<SpkiPin> {
        self.mismatch.lock().map(|g| g.map(SpkiPin)).unwrap_or(None)
    }

    /// Checks `end_entity` against the pin.
    pub fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), TlsError> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| TlsError::InvalidCertificate(CertificateError::BadEncoding))?;
        let spki = cert.subject_public_key_info();
        let got = SpkiPin::of_spki(spki.as_ref());
        if self.pin.matches(&got.0) {
            Ok(())
        } else {
            if let Ok(mut m) = self.mismatch.lock() {
                *m = Some(got.0);
            }
            Err(TlsError::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> (CertificateDer<'static>, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["refuge-relay".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        (
            cert.der().clone(),
            rcgen::PublicKeyData::subject_public_key_info(&key),
        )
    }

    #[test]
    fn accepts_the_pinned_spki_and_refuses_another() {
        let (der, spki) = cert();
        let pin = SpkiPin::of_spki(&spki);
        let v = PinVerifier::new(pin);
        v.check(&der).expect("the pinned certificate is accepted");
        assert!(v.mismatch().is_none());

        let (other, other_spki) = cert();
        let err = v.check(&other).unwrap_err();
        assert_eq!(
            err,
            TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
        );
        assert_eq!(v.mismatch(), Some(SpkiPin::of_spki(&other_spki)));
    }

    #[test]
    fn garbage_certificate_is_a_bad_encoding() {
        let v = PinVerifier::new(SpkiPin([0; 32]));
        let err = v
            .check(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]))
            .unwrap_err();
        assert_eq!(
            err,
            TlsError::InvalidCertificate(CertificateError::BadEncoding)
        );
    }
}
