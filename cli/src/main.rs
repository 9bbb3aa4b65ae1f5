//! `slipway`: the client for pipelines and people (`client`), and, in the full build (feature
//! `server`, the default), the operator commands and `slipway dev`, the embedded default that
//! runs the API, a worker and the scheduler in one process against local services (see
//! scripts/dev.sh). Built with `--no-default-features` it is the client alone, which links none
//! of the server (scripts/check-client-deps.sh).
// `slipway dev` runs the worker's job handlers: their futures (apalis's service stack around
// them) nest deeper than the default limit of 128, as in `slipway-worker`.
#![recursion_limit = "256"]

mod client;
mod pack;
mod progress;
#[cfg(feature = "server")]
mod server;

use anyhow::{Context, bail};

const USAGE: &str = "usage: slipway <command>

client commands (SLIPWAY_URL and SLIPWAY_API_KEY, or `slipway login`; add --json for the API's JSON):
  login --url URL --key KEY [--key-id ID --signing-secret-env VAR]
                       remember the API, the key and (read from $VAR) its signing secret for the
                       commands below; without a signing secret requests are signed the
                       deprecated v1 way, which keys made before signing secrets still use
  init NAME [--skip-signing]
                       create a function (or find the one of that name)
  deploy DIR|ARCHIVE --function NAME|ID [--env-file FILE] [--wait]
                       pack DIR (.dockerignore respected) or upload ARCHIVE; --wait follows the
                       build log and exits 0 when the version is active, 1 when it failed
  status NAME|ID       state, serving version, tag and digest
  deployments NAME|ID  the version history
  rollback VERSION --function NAME|ID
  delete NAME|ID       schedule the function for deletion (grace period)
  cancel-delete NAME|ID
  git-bind NAME|ID --provider github|gitlab|gitea --repository OWNER/NAME --clone-url URL
           [--branch main] [--subdirectory DIR] --secret-env VAR
           [--username USER --password-env VAR | --ssh-key-file FILE [--known-hosts-file FILE]]
                       deploy the function on every push to the branch; secrets are read from
                       the environment and files, never from the command line
  git-bindings NAME|ID
  git-unbind BINDING --function NAME|ID
  logs DEPLOYMENT [--follow]
  invoke NAME|ID [--path PATH] [--data BODY]

operator commands (DATABASE_URL; only in the full build, `cargo install --path cli`, not in a
client-only build made with --no-default-features):
  dev                  migrate, then run the API, a worker and the scheduler in one process
  migrate              apply database migrations and exit
  create-key <user> [--operator]
                       create the user if needed and print a new API key for it, its id and its
                       signing secret (SLIPWAY_API_KEY=, SLIPWAY_KEY_ID=, SLIPWAY_SIGNING_SECRET=
                       lines, shown once); --operator
                       also lets the user list and fire the scheduler's sweeps
  quota <user> <n|default>
                       set the user's function quota, or go back to SLIPWAY_DEFAULT_FUNCTION_QUOTA
  purge <function-id>  purge a function scheduled for deletion now, without waiting for the end
                       of its grace period (the worker runs it; safe to repeat)

  --version            print the version

configuration comes from the environment; see README.md";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [command, ..] if OPERATOR_COMMANDS.contains(command) => operator_command(&args).await,
        [command, ..] if CLIENT_COMMANDS.contains(command) => {
            let ok = client_command(&args).await?;
            std::process::exit(if ok { 0 } else { 1 });
        }
        ["--version" | "version"] => {
            println!("slipway {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => usage_error(),
    }
}

/// Wrong arguments: the usage on stderr, exit 2.
fn usage_error() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

/// Parsed in every build, so the client-only one can say why it will not run them.
const OPERATOR_COMMANDS: [&str; 5] = ["dev", "migrate", "create-key", "quota", "purge"];

#[cfg(feature = "server")]
use server::run as operator_command;

/// The client-only build: exit 2, as for any command this binary cannot run.
#[cfg(not(feature = "server"))]
async fn operator_command(args: &[String]) -> anyhow::Result<()> {
    eprintln!(
        "slipway: `{}` is an operator command, and this build of slipway is the client only; \
         the operator commands (dev, migrate, create-key, quota, purge) need the full build \
         (default features: `cargo install --path cli`)",
        args[0]
    );
    std::process::exit(2);
}

const CLIENT_COMMANDS: [&str; 14] = [
    "login",
    "init",
    "deploy",
    "status",
    "deployments",
    "rollback",
    "delete",
    "cancel-delete",
    "logs",
    "invoke",
    "whoami",
    "git-bind",
    "git-bindings",
    "git-unbind",
];

/// Positional arguments and `--flag [value]`s; `--json`, `--wait`, `--follow`, `--skip-signing`
/// take no value.
struct Args {
    positional: Vec<String>,
    flags: std::collections::HashMap<String, Option<String>>,
}

impl Args {
    fn parse(raw: &[String]) -> anyhow::Result<Self> {
        const SWITCHES: [&str; 4] = ["json", "wait", "follow", "skip-signing"];
        let mut positional = Vec::new();
        let mut flags = std::collections::HashMap::new();
        let mut rest = raw.iter();
        while let Some(arg) = rest.next() {
            match arg.strip_prefix("--") {
                Some(name) if SWITCHES.contains(&name) => {
                    flags.insert(name.to_owned(), None);
                }
                Some(name) => {
                    let value = rest
                        .next()
                        .with_context(|| format!("--{name} needs a value"))?;
                    flags.insert(name.to_owned(), Some(value.clone()));
                }
                None => positional.push(arg.clone()),
            }
        }
        Ok(Self { positional, flags })
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.flags.get(name).and_then(|v| v.as_deref())
    }

    fn has(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    fn nth(&self, n: usize, what: &str) -> anyhow::Result<&str> {
        self.positional
            .get(n)
            .map(String::as_str)
            .with_context(|| format!("missing {what}; see `slipway help`"))
    }

    /// `--function X`, or the first argument after the command.
    fn function(&self) -> anyhow::Result<&str> {
        match self.value("function") {
            Some(f) => Ok(f),
            None => self.nth(1, "the function (NAME or ID)"),
        }
    }
}

/// Runs a client command; false when what it did failed (a failed deployment, say).
async fn client_command(raw: &[String]) -> anyhow::Result<bool> {
    let args = Args::parse(raw)?;
    let command = args.nth(0, "a command")?;
    if command == "login" {
        let url = args.value("url").context("--url is required")?;
        let key = args.value("key").context("--key is required")?;
        let signer = match (args.value("key-id"), args.value("signing-secret-env")) {
            (Some(id), Some(var)) => Some(client::Signer {
                key_id: id
                    .parse()
                    .with_context(|| format!("--key-id: {id:?} is not a key id"))?,
                secret: std::env::var(var)
                    .with_context(|| format!("--signing-secret-env: ${var} is not set"))?,
            }),
            (None, None) => None,
            _ => bail!("--key-id and --signing-secret-env go together"),
        };
        client::login(url, key, signer.as_ref())?;
        return Ok(true);
    }
    let client = client::Client::from_env(args.has("json"))?;
    match command {
        "init" => {
            client
                .init(args.nth(1, "NAME")?, args.has("skip-signing"))
                .await?
        }
        "deploy" => {
            let function = args.value("function").context("--function is required")?;
            let source = std::path::Path::new(args.nth(1, "DIR or ARCHIVE")?);
            let env_file = args.value("env-file").map(std::path::Path::new);
            return client
                .deploy(function, source, env_file, args.has("wait"))
                .await;
        }
        "status" | "whoami" => client.status(args.function()?).await?,
        "deployments" => client.deployments(args.function()?).await?,
        "rollback" => {
            let version = args
                .nth(1, "VERSION")?
                .parse()
                .context("VERSION must be a number")?;
            let function = args.value("function").context("--function is required")?;
            client.rollback(function, version).await?;
        }
        "delete" => client.delete(args.function()?).await?,
        "cancel-delete" => client.cancel_delete(args.function()?).await?,
        "logs" => {
            return client
                .logs(args.nth(1, "DEPLOYMENT")?, args.has("follow"))
                .await;
        }
        "invoke" => {
            client
                .invoke(
                    args.function()?,
                    args.value("path").unwrap_or(""),
                    args.value("data"),
                )
                .await?
        }
        "git-bind" => {
            client
                .git_bind(args.function()?, git_binding(&args)?)
                .await?
        }
        "git-bindings" => client.git_bindings(args.function()?).await?,
        "git-unbind" => {
            let function = args.value("function").context("--function is required")?;
            client.git_unbind(function, args.nth(1, "BINDING")?).await?
        }
        other => bail!("unknown command {other:?}"),
    }
    Ok(true)
}

/// The binding `git-bind` asks for. Secrets come from the environment or a file, so they never
/// appear in a process listing or a shell history.
fn git_binding(args: &Args) -> anyhow::Result<serde_json::Value> {
    let required = |name: &str| {
        args.value(name)
            .with_context(|| format!("--{name} is required"))
    };
    let from_env = |flag: &str| -> anyhow::Result<String> {
        let var = required(flag)?;
        std::env::var(var).with_context(|| format!("--{flag}: ${var} is not set"))
    };
    let credentials = match (args.value("username"), args.value("ssh-key-file")) {
        (Some(username), None) => Some(serde_json::json!({
            "username": username,
            "password": from_env("password-env")?,
        })),
        (None, Some(file)) => {
            let known_hosts = args
                .value("known-hosts-file")
                .map(|f| std::fs::read_to_string(f).with_context(|| format!("reading {f}")))
                .transpose()?;
            Some(serde_json::json!({
                "ssh_key": std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?,
                "known_hosts": known_hosts,
            }))
        }
        (None, None) => None,
        (Some(_), Some(_)) => bail!("give --username or --ssh-key-file, not both"),
    };
    let mut binding = serde_json::json!({
        "provider": required("provider")?,
        "repository": required("repository")?,
        "clone_url": required("clone-url")?,
        "branch": args.value("branch").unwrap_or("main"),
        "subdirectory": args.value("subdirectory").unwrap_or(""),
        "secret": from_env("secret-env")?,
    });
    if let Some(credentials) = credentials {
        binding["credentials"] = credentials;
    }
    Ok(binding)
}
