//! `mpcl keygen`: creates a node's ed25519 identity (participant or coordinator) so that it can
//! be enrolled, and prints what the other side needs to know about it.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use mpcl_protocol::identity::{self, ID_FILE, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE};

/// Create an ed25519 key pair for a participant or the coordinator.
///
/// Writes DIR/private_key.pem (PKCS#8, readable only by you: keep it secret and never copy it
/// to another machine), DIR/public_key.hex and DIR/node_id.txt, and prints the participant id,
/// the public key, and the lines to add to the coordinator's enrolment file. Refuses to
/// overwrite an existing key.
///
/// Participants send the printed [[participant]] lines to whoever runs the coordinator. For the
/// coordinator's own key, give participants the printed public key: their clients pin it.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory for the key files (created with owner-only access if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Participant id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit.
    /// Defaults to a 16-hex-digit fingerprint of the public key.
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,

    /// An operator key: print the [[operator]] lines (read-only: `mpcl status` only, never
    /// trains) instead of [[participant]].
    #[arg(long)]
    pub operator: bool,
}

/// Runs `mpcl keygen`.
pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let identity = identity::keygen(&args.out, args.id.as_deref())
        .with_context(|| format!("cannot create a key in {}", args.out.display()))?;
    let dir = args.out.display();
    println!("Wrote {dir}/{PRIVATE_KEY_FILE} (private: keep it secret, owner-only)");
    println!("      {dir}/{PUBLIC_KEY_FILE}");
    println!("      {dir}/{ID_FILE}");
    println!();
    println!("participant id: {}", identity.id());
    println!(
        "public key:     {}",
        identity::public_key_hex(&identity.public_key())
    );
    println!("fingerprint:    {}", identity.fingerprint());
    println!();
    println!("Add these lines to the coordinator's enrolment file:");
    println!();
    let entry = identity.enrolment_entry();
    if args.operator {
        print!("{}", entry.replacen("[[participant]]", "[[operator]]", 1));
    } else {
        print!("{entry}");
    }
    Ok(())
}
