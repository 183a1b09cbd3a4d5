//! `seed`: creates `--users` users through the User service and writes their ids, one a line,
//! for `load` and `watch` to call with.

use std::{path::PathBuf, sync::Arc};

use meshwork_proto::user::v1::{CreateUserRequest, user_service_client::UserServiceClient};
use tokio::sync::Semaphore;

use crate::{BoxError, load::connect_all};

#[derive(clap::Args)]
pub struct SeedArgs {
    /// The User service: `http://host:port`.
    #[arg(long)]
    target: String,
    /// How many users to create.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// The file their ids are written to.
    #[arg(long)]
    out: PathBuf,
}

/// Calls in flight while seeding: enough to be quick, few enough not to queue on SQLite's
/// single writer.
const SEED_CONCURRENCY: usize = 16;

pub async fn run(args: SeedArgs) -> Result<(), BoxError> {
    let channel = connect_all(&args.target, 1).await?.remove(0);
    let permits = Arc::new(Semaphore::new(SEED_CONCURRENCY));
    let run_id = std::process::id();
    let mut creates = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let permit = permits.clone().acquire_owned().await?;
        let mut client = UserServiceClient::new(channel.clone());
        creates.push(tokio::spawn(async move {
            let _permit = permit;
            let request = CreateUserRequest {
                name: format!("Seeded {i}"),
                email: format!("seed-{run_id}-{i}@example.com"),
            };
            let user = client.create_user(request).await?.into_inner().user;
            Ok::<_, tonic::Status>(user.map(|user| user.id).unwrap_or_default())
        }));
    }
    let mut ids = Vec::with_capacity(args.users);
    for create in creates {
        ids.push(create.await??);
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, ids.join("\n") + "\n")?;
    println!("seeded {} users ({})", ids.len(), args.out.display());
    Ok(())
}
