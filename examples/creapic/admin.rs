//! The operator's commands over the store: organizations and their members, keys, credits and
//! the audit log.
//!
//! They open the same database `serve` uses (by default the data directory's SQLite file, which
//! both may have open at once) and act as the operator (`Actor::Operator`), so every change is
//! audited with the actor `operator`. Keys are printed once, at creation, and never again.

use std::sync::Arc;

use creapic_core::account::{PASSWORD_MAX_BYTES, Password};
use creapic_core::audit::{Actor, AuditQuery, RequestContext};
use creapic_core::clock::Timestamp;
use creapic_core::id::{KeyId, OrgId};
use creapic_core::key::KeyMode;
use creapic_core::org::{Email, Role};
use creapic_core::page::PageLimit;
use creapic_core::scope::ScopeSet;
use creapic_core::store::{ConnectOptions, KeyQuery, Store};
use creapic_core::{Creapic, KeySpec};
use creapic_server_kit::http::views;
use serde_json::json;

use crate::cli::{
    AuditArgs, AuditCommand, AuditFormat, CliError, CliResult, CreditsCommand, KeyCommand,
    MemberCommand, OrgCommand, StoreArgs, UserCommand,
};
use crate::output;

pub type Core = Arc<Creapic<dyn Store>>;

/// The database URL the flags name.
pub fn database_url(args: &StoreArgs) -> CliResult<String> {
    if let Some(url) = &args.database {
        return Ok(url.clone());
    }
    // 0700: the database, its WAL and the media below it are private (see `data_dir`).
    crate::data_dir::create(&args.data_dir)?;
    Ok(format!(
        "sqlite://{}",
        args.data_dir.join("creapic.db").display()
    ))
}

/// Opens the store (applying migrations) and the core service over it.
pub async fn open(args: &StoreArgs) -> CliResult<Core> {
    let url = database_url(args)?;
    let store = creapic_core::store::connect(&url, ConnectOptions::default()).await?;
    Ok(Arc::new(Creapic::new(store)))
}

fn org_id(text: &str) -> CliResult<OrgId> {
    OrgId::parse(text).map_err(|_| {
        CliError::usage(format!(
            "--org: {text:?} is not an organization id (a UUID)"
        ))
        .hint("`creapic org create --name NAME` prints one")
    })
}

fn operator_context() -> RequestContext {
    RequestContext::new(None, Some("creapic-cli"))
}

/// Most pages a listing command reads (1,000 items each).
const LIST_PAGES_MAX: usize = 100;

pub async fn org(args: &StoreArgs, cmd: OrgCommand) -> CliResult {
    let (name, owner, json) = match cmd {
        OrgCommand::Create { name, owner, json } => (name, owner, json),
        OrgCommand::List { user, json } => return org_list(args, &user, json).await,
    };
    let core = open(args).await?;
    let user = core.ensure_user(&owner).await?;
    let org = core
        .create_org(&name, user.id, Actor::Operator, &operator_context())
        .await?;
    if json {
        return output::json(&json!({
            "organization": views::organization(&org),
            "owner": {"id": user.id.to_string(), "email": user.email.as_str()},
        }));
    }
    output::line(format!("organization {} created: {}", org.id, org.name));
    output::line(format!("owner        {} ({})", user.email, user.id));
    output::line(format!(
        "next         creapic key create --org {} --name dev --scopes IMAGE_GENERATION,SCENE_RENDER,ORGANIZATION_WRITE",
        org.id
    ));
    Ok(())
}

fn role_arg(text: &str) -> CliResult<Role> {
    Role::parse(text).map_err(|_| {
        CliError::usage(format!("--role: {text:?} is not a role"))
            .hint("one of owner, admin, member")
    })
}

/// The user with this e-mail, who must exist.
async fn user_by_email(core: &Core, email: &str) -> CliResult<creapic_core::org::User> {
    let email = Email::new(email)?;
    core.store().user_by_email(&email).await?.ok_or_else(|| {
        CliError::new(format!("no user with the e-mail {email}"))
            .hint("`creapic member add --org ORG --email E --role R` creates one")
    })
}

async fn org_list(args: &StoreArgs, email: &str, json: bool) -> CliResult {
    let core = open(args).await?;
    let user = user_by_email(&core, email).await?;
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..LIST_PAGES_MAX {
        let page = core
            .organizations_of(user.id, after, PageLimit::max())
            .await?;
        all.extend(page.items);
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|(o, r)| json!({"organization": views::organization(o), "role": r.as_str()}))
            .collect();
        return output::json(&json!({"user": user.email.as_str(), "organizations": list}));
    }
    for (o, r) in &all {
        output::line(format!("{}  {:<6}  {}", o.id, r.as_str(), o.name));
    }
    if all.is_empty() {
        output::line(format!("{} belongs to no organization", user.email));
    }
    Ok(())
}

fn member_json(m: &creapic_core::org::Member) -> serde_json::Value {
    serde_json::to_value(views::member(m)).unwrap_or_default()
}

fn member_line(m: &creapic_core::org::Member) -> String {
    let joined = m
        .joined_at
        .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    format!(
        "{}  {:<6}  {}  joined {joined}",
        m.user.id,
        m.role.as_str(),
        m.user.email
    )
}

/// The password on stdin: at most the longest a password may be, one trailing newline dropped.
fn password_from_stdin(given: bool) -> CliResult<Password> {
    use std::io::Read;
    if !given {
        return Err(CliError::usage("the password is read from stdin only")
            .hint("printf '%s' \"$PASSWORD\" | creapic user create --email E --password-stdin"));
    }
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(PASSWORD_MAX_BYTES as u64 + 3)
        .read_to_string(&mut text)
        .map_err(|e| CliError::new(format!("could not read the password from stdin: {e}")))?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text)
        .to_owned();
    Password::new(text).map_err(|e| CliError::usage(e.to_string()))
}

pub async fn user(args: &StoreArgs, cmd: UserCommand) -> CliResult {
    match cmd {
        UserCommand::Create {
            email,
            password_stdin,
            org,
            role,
            json,
        } => {
            let org = org.as_deref().map(org_id).transpose()?;
            let role = role_arg(&role)?;
            let password = password_from_stdin(password_stdin)?;
            let core = open(args).await?;
            let known = Email::new(&email).map_err(|e| CliError::usage(format!("--email: {e}")))?;
            if core.store().credentials(&known).await?.is_some() {
                return Err(CliError::usage(format!("{email} already has a password"))
                    .hint("`creapic user password --email E --password-stdin` changes it"));
            }
            let user = core.set_password(&email, &password).await?;
            let member = match org {
                Some(org) => Some(
                    core.add_member(Actor::Operator, org, &email, role, &operator_context())
                        .await?,
                ),
                None => None,
            };
            if json {
                return output::json(&json!({
                    "user": {"id": user.id.to_string(), "email": user.email.as_str()},
                    "member": member.as_ref().map(member_json),
                }));
            }
            output::line(format!("created  {}  {}", user.id, user.email.as_str()));
            if let Some(m) = &member {
                output::line(format!("added    {}", member_line(m)));
            }
            output::line("They sign in at /console/login.");
            Ok(())
        }
        UserCommand::Password {
            email,
            password_stdin,
            json,
        } => {
            let password = password_from_stdin(password_stdin)?;
            let core = open(args).await?;
            let user = user_by_email(&core, &email).await?;
            core.set_password(&email, &password).await?;
            if json {
                return output::json(
                    &json!({"user": {"id": user.id.to_string(), "email": user.email.as_str()}}),
                );
            }
            output::line(format!(
                "changed  the password of {}; their console sessions ended",
                user.email.as_str()
            ));
            Ok(())
        }
    }
}

pub async fn member(args: &StoreArgs, cmd: MemberCommand) -> CliResult {
    let ctx = operator_context();
    match cmd {
        MemberCommand::List { org, json } => {
            let org = org_id(&org)?;
            let core = open(args).await?;
            let mut all = Vec::new();
            let mut after = None;
            for _ in 0..LIST_PAGES_MAX {
                let page = core
                    .members(Actor::Operator, org, after, PageLimit::max())
                    .await?;
                all.extend(page.items);
                after = page.next;
                if after.is_none() {
                    break;
                }
            }
            if json {
                let list: Vec<_> = all.iter().map(member_json).collect();
                return output::json(&json!({"organizationId": org.to_string(), "members": list}));
            }
            for m in &all {
                output::line(member_line(m));
            }
            Ok(())
        }
        MemberCommand::Add {
            org,
            email,
            role,
            json,
        } => {
            let (org, role) = (org_id(&org)?, role_arg(&role)?);
            let core = open(args).await?;
            let m = core
                .add_member(Actor::Operator, org, &email, role, &ctx)
                .await?;
            if json {
                return output::json(&json!({"member": member_json(&m)}));
            }
            output::line(format!("added    {}", member_line(&m)));
            Ok(())
        }
        MemberCommand::Role {
            org,
            email,
            role,
            json,
        } => {
            let (org, role) = (org_id(&org)?, role_arg(&role)?);
            let core = open(args).await?;
            let user = user_by_email(&core, &email).await?;
            let m = core
                .change_role(Actor::Operator, org, user.id, role, &ctx)
                .await?;
            if json {
                return output::json(&json!({"member": member_json(&m)}));
            }
            output::line(format!("changed  {}", member_line(&m)));
            Ok(())
        }
        MemberCommand::Remove { org, email, json } => {
            let org = org_id(&org)?;
            let core = open(args).await?;
            let user = user_by_email(&core, &email).await?;
            let m = core
                .remove_member(Actor::Operator, org, user.id, &ctx)
                .await?;
            if json {
                return output::json(&json!({"member": member_json(&m)}));
            }
            output::line(format!("removed  {}", member_line(&m)));
            Ok(())
        }
    }
}

pub async fn key(args: &StoreArgs, cmd: KeyCommand) -> CliResult {
    match cmd {
        KeyCommand::Create {
            org,
            name,
            scopes,
            test,
            json,
        } => {
            let org = org_id(&org)?;
            let scopes = ScopeSet::parse_list(&scopes).map_err(|e| {
                CliError::usage(format!("--scopes: {e}"))
                    .hint("e.g. --scopes IMAGE_GENERATION,SCENE_RENDER,ORGANIZATION_WRITE")
            })?;
            let core = open(args).await?;
            let spec = KeySpec {
                name,
                scopes,
                mode: if test { KeyMode::Test } else { KeyMode::Live },
                expires_at: None,
            };
            let created = core
                .create_key(Actor::Operator, org, spec, &operator_context())
                .await?;
            let info = views::api_key(&created.key);
            if json {
                return output::json(&json!({
                    "key": created.secret.expose(),
                    "id": info.id,
                    "prefix": info.prefix,
                    "name": info.name,
                    "scopes": info.scopes,
                    "mode": info.mode,
                    "organizationId": info.organization_id,
                    "createdAt": info.created_at,
                }));
            }
            output::line(format!("key     {}", created.secret.expose()));
            output::line("        (shown once: creapic keeps only its SHA-256)");
            output::line(format!("id      {}", info.id));
            output::line(format!("prefix  {}", info.prefix));
            output::line(format!("scopes  {}", created.key.scopes));
            Ok(())
        }
        KeyCommand::List { org, all, json } => {
            let org = org_id(&org)?;
            let core = open(args).await?;
            let mut query = KeyQuery {
                include_deleted: all,
                after: None,
                limit: PageLimit::max(),
            };
            let mut keys = Vec::new();
            loop {
                let page = core.list_keys(Actor::Operator, org, &query).await?;
                keys.extend(page.items.iter().map(views::api_key));
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            if json {
                return output::json(&json!({ "keys": keys }));
            }
            if keys.is_empty() {
                output::line("no keys");
            }
            for k in keys {
                output::line(format!(
                    "{}  {}  {:<24} created {}  last used {}{}",
                    k.id,
                    k.prefix,
                    k.name,
                    k.created_at,
                    k.last_used_at.as_deref().unwrap_or("never"),
                    k.deleted_at
                        .map(|d| format!("  deleted {d}"))
                        .unwrap_or_default()
                ));
            }
            Ok(())
        }
        KeyCommand::Delete { key_id, json } => {
            let id = KeyId::parse(&key_id).map_err(|_| {
                CliError::usage(format!("{key_id:?} is not a key id (a UUID)"))
                    .hint("`creapic key list --org ORG_ID` shows them")
            })?;
            let core = open(args).await?;
            let key = core
                .store()
                .key_by_id(id)
                .await?
                .ok_or_else(|| CliError::new(format!("no key {id}")))?;
            let deleted = core
                .delete_key(Actor::Operator, key.org, id, &operator_context())
                .await?;
            if json {
                return output::json(&json!({ "apiKey": views::api_key(&deleted) }));
            }
            output::line(format!(
                "key {} ({}) deleted at {}; it is refused from now on",
                deleted.id,
                deleted.prefix,
                deleted
                    .deleted_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_default()
            ));
            Ok(())
        }
    }
}

pub async fn credits(args: &StoreArgs, cmd: CreditsCommand) -> CliResult {
    match cmd {
        CreditsCommand::Grant {
            org,
            amount,
            idempotency_key,
            json,
        } => {
            let org = org_id(&org)?;
            let core = open(args).await?;
            let key =
                idempotency_key.unwrap_or_else(|| format!("cli:{}", uuid::Uuid::now_v7().simple()));
            let receipt = core
                .grant(Actor::Operator, org, amount, &key, &operator_context())
                .await?;
            if json {
                return output::json(&json!({
                    "organizationId": org.to_string(),
                    "granted": amount,
                    "balance": receipt.balance().get(),
                    "replayed": receipt.replayed,
                }));
            }
            output::line(format!(
                "granted {amount} credits; balance {}",
                receipt.balance()
            ));
            Ok(())
        }
        CreditsCommand::Balance { org, json } => {
            let org = org_id(&org)?;
            let core = open(args).await?;
            let balance = core.balance(org).await?;
            if json {
                return output::json(
                    &json!({"organizationId": org.to_string(), "balance": balance.get()}),
                );
            }
            output::line(balance);
            Ok(())
        }
        CreditsCommand::Ledger { org, json } => {
            let org = org_id(&org)?;
            let core = open(args).await?;
            let mut after = None;
            let mut entries = Vec::new();
            loop {
                let page = core.entries(org, after, PageLimit::max()).await?;
                entries.extend(page.items.iter().map(|e| {
                    json!({
                        "seq": e.seq,
                        "id": e.id.to_string(),
                        "kind": e.kind.as_str(),
                        "delta": e.delta,
                        "amount": e.amount.get(),
                        "balanceAfter": e.balance_after.get(),
                        "hold": e.hold.map(|h| h.to_string()),
                        "job": e.job.map(|j| j.to_string()),
                        "idempotencyKey": e.idempotency_key.as_str(),
                        "createdAt": e.created_at.to_rfc3339(),
                    })
                }));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            if json {
                return output::json(
                    &json!({"organizationId": org.to_string(), "entries": entries}),
                );
            }
            for e in &entries {
                output::line(format!(
                    "{:>6}  {}  {:<8} {:>+8}  balance {:>8}",
                    e["seq"],
                    e["createdAt"].as_str().unwrap_or(""),
                    e["kind"].as_str().unwrap_or(""),
                    e["delta"].as_i64().unwrap_or(0),
                    e["balanceAfter"]
                ));
            }
            Ok(())
        }
    }
}

/// `creapic audit verify`: the whole chain, the first break, the head to record elsewhere.
async fn verify(args: &StoreArgs, json: bool) -> CliResult {
    let core = open(args).await?;
    let report = core.verify_audit_chain().await?;
    let head = report.head;
    if json {
        output::json(&json!({
            "intact": report.is_intact(),
            "checked": report.checked,
            "anchorSeq": head.anchor_seq,
            "lastSeq": head.last_seq,
            "headHash": head.digest().to_hex(),
            "lastHash": head.last_hash.to_hex(),
            "broken": report.broken.map(|b| json!({
                "seq": b.seq,
                "kind": b.kind.as_str(),
                "detail": b.kind.describe(),
            })),
        }))?;
    } else if report.is_intact() {
        output::line(format!(
            "audit chain intact: {} events checked (seq {}..={})",
            report.checked,
            head.anchor_seq + 1,
            head.last_seq
        ));
        output::line(format!("head hash {}", head.digest()));
    }
    match report.broken {
        None => Ok(()),
        Some(b) => Err(CliError::new(format!(
            "audit chain broken at seq {}: {} ({} events before it verified)",
            b.seq,
            b.kind.describe(),
            report.checked
        ))
        .hint("restore the audit_events table from a backup and compare; the row at that seq or just before it was changed")),
    }
}

pub async fn audit(args: &StoreArgs, audit: AuditArgs) -> CliResult {
    if let Some(AuditCommand::Verify { json }) = audit.command {
        return verify(args, json).await;
    }
    if let Some(AuditCommand::Purge { json }) = audit.command {
        let core = open(args).await?;
        let events = core.purge_audit().await?;
        let requests = core.purge_requests().await?;
        if json {
            return output::json(
                &json!({"auditEventsPurged": events, "idempotencyRecordsPurged": requests}),
            );
        }
        output::line(format!(
            "purged {events} audit events older than 90 days and {requests} expired idempotency records"
        ));
        return Ok(());
    }
    let org = audit
        .org
        .as_deref()
        .ok_or_else(|| {
            CliError::usage("--org is required")
                .hint("creapic audit --org ORG_ID [--since DATE] [--format json|csv]")
        })
        .and_then(org_id)?;
    let since = audit
        .since
        .as_deref()
        .map(Timestamp::parse)
        .transpose()
        .map_err(|e| CliError::usage(format!("--since: {e}")).hint("use YYYY-MM-DD or RFC 3339"))?;
    let core = open(args).await?;
    let mut query = AuditQuery {
        org,
        since,
        until: None,
        action: None,
        after: None,
        limit: PageLimit::max(),
    };
    let mut events = Vec::new();
    loop {
        let page = core.audit(Actor::Operator, &query).await?;
        events.extend(page.items.iter().map(|r| views::audit_event(&r.event)));
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    match audit.format {
        AuditFormat::Json => output::json(&json!({ "events": events })),
        AuditFormat::Csv => {
            print!(
                "{}",
                creapic_server_kit::http::handlers::audit::to_csv(&events)
            );
            Ok(())
        }
        AuditFormat::Text => {
            for e in events {
                output::line(format!(
                    "{}  {:<16} {:<10} {:<14} {:<15} {}",
                    e.at,
                    e.action,
                    // Whole: an actor cut short names no one (`user:0193…` is many people).
                    e.actor,
                    e.key_prefix.as_deref().unwrap_or("-"),
                    e.ip.as_deref().unwrap_or("-"),
                    e.detail.as_deref().unwrap_or("")
                ));
            }
            Ok(())
        }
    }
}
