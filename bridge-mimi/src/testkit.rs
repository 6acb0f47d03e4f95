//! Test helpers (feature `testkit`): a certificate authority and provider certificates for
//! providers talking mutual TLS on loopback.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// Writes under `dir` a CA (`ca.pem`) and, for each domain, a certificate naming it for server
/// and client use (`DOMAIN.crt`) with its key (`DOMAIN.key`).
pub fn write_pki(dir: &Path, domains: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "MIMI test CA");
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.pem"), issuer.pem())?;
    for domain in domains {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![(*domain).to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, *domain);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let certificate = params.signed_by(&key, &issuer)?;
        std::fs::write(dir.join(format!("{domain}.crt")), certificate.pem())?;
        std::fs::write(dir.join(format!("{domain}.key")), key.serialize_pem())?;
    }
    Ok(())
}

/// The settings of a provider `domain` on loopback port `port` with the certificates
/// [`write_pki`] wrote under `dir`, whose one peer `peer` listens on `peer_port`.
pub fn loopback_settings(
    dir: &Path,
    domain: &str,
    port: u16,
    peer: &str,
    peer_port: u16,
) -> Result<crate::settings::Settings, Box<dyn std::error::Error>> {
    let text = format!(
        r#"
        domain = "{domain}"
        listen = "127.0.0.1:{port}"
        origin = "https://{domain}:{port}"
        certificate = "{dir}/{domain}.crt"
        key = "{dir}/{domain}.key"
        ca = "{dir}/ca.pem"
        timeout_secs = 5
        [peers]
        "{peer}" = {{ url = "https://{peer}:{peer_port}", address = "127.0.0.1:{peer_port}" }}
        "#,
        dir = dir.display()
    );
    crate::settings::parse(&text.parse()?).map_err(|issues| format!("{issues:?}").into())
}
