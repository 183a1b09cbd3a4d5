//! Development security material, for `make certs`, `make token` and `make run-secure`:
//!
//! - `meshwork-dev certs DIR`: a development CA (`ca.pem`), a certificate and key per
//!   service (`<service>.pem`, `<service>-key.pem`, for localhost, 127.0.0.1 and the
//!   service's Kubernetes names), a client certificate for grpcurl (`client.pem`,
//!   `client-key.pem`) and an HS256 secret (`jwt-secret`). Made anew each time.
//! - `meshwork-dev token --secret FILE --sub ID [--roles admin,...]`: prints an HS256 token.
//!
//! Nothing here is for production: the CA key is not even kept.

use std::{fs, io::Read, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use meshwork_e2e::pki::{self, Ca, LOCAL_NAMES};

#[derive(Parser)]
#[command(name = "meshwork-dev", about = "development certificates and tokens")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a CA, per-service and client certificates, and a JWT secret into DIR.
    Certs { dir: PathBuf },
    /// Prints an HS256 token signed with the secret in --secret.
    Token {
        #[arg(long)]
        secret: PathBuf,
        /// The caller's user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Comma-separated roles (`admin`).
        #[arg(long, default_value = "")]
        roles: String,
        #[arg(long, default_value = "meshwork-dev")]
        issuer: String,
        #[arg(long, default_value = "meshwork")]
        audience: String,
        /// How long the token is valid.
        #[arg(long, default_value = "12h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

const SERVICES: [&str; 3] = ["hello-service", "user-service", "order-service"];

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Certs { dir } => certs(&dir),
        Command::Token {
            secret,
            sub,
            roles,
            issuer,
            audience,
            ttl,
        } => token(&secret, &sub, &roles, &issuer, &audience, ttl),
    }
}

fn certs(dir: &std::path::Path) -> ExitCode {
    if let Err(error) = fs::create_dir_all(dir) {
        eprintln!("cannot create {}: {error}", dir.display());
        return ExitCode::FAILURE;
    }
    let ca = Ca::new("Meshwork development CA");
    ca.write(&dir.join("ca.pem"));
    for service in SERVICES {
        let cluster_names = [
            service.to_owned(),
            format!("{service}.meshwork.svc"),
            format!("{service}.meshwork.svc.cluster.local"),
        ];
        let mut names: Vec<&str> = LOCAL_NAMES.to_vec();
        names.extend(cluster_names.iter().map(String::as_str));
        ca.issue(service, &names).write(dir, service);
    }
    ca.issue("grpcurl", &[]).write(dir, "client");
    let mut secret = [0u8; 32];
    let random = fs::File::open("/dev/urandom").and_then(|mut file| file.read_exact(&mut secret));
    if let Err(error) = random {
        eprintln!("cannot read /dev/urandom: {error}");
        return ExitCode::FAILURE;
    }
    let hex: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
    if let Err(error) = fs::write(dir.join("jwt-secret"), hex) {
        eprintln!("cannot write the secret: {error}");
        return ExitCode::FAILURE;
    }
    println!(
        "wrote ca.pem, {{hello,user,order}}-service{{,-key}}.pem, client{{,-key}}.pem and jwt-secret to {}",
        dir.display()
    );
    ExitCode::SUCCESS
}

fn token(
    secret: &std::path::Path,
    sub: &str,
    roles: &str,
    issuer: &str,
    audience: &str,
    ttl: Duration,
) -> ExitCode {
    let secret = match fs::read(secret) {
        Ok(bytes) => bytes.trim_ascii().to_vec(),
        Err(error) => {
            eprintln!(
                "cannot read {}: {error} (run `make certs` first)",
                secret.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if sub.is_empty() {
        eprintln!("--sub is required: the caller's user id (make token SUB=...)");
        return ExitCode::FAILURE;
    }
    let roles: Vec<&str> = roles
        .split(',')
        .map(str::trim)
        .filter(|role| !role.is_empty())
        .collect();
    let mut claims = pki::claims(sub, &roles, issuer, audience);
    claims["exp"] = (pki::now() + ttl.as_secs() as i64).into();
    println!("{}", pki::hs256(&secret, &claims));
    ExitCode::SUCCESS
}
