//! Git bindings (a provider's repository and branch → a function) and the webhook deliveries
//! already handled.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BindingRow {
    pub id: Uuid,
    pub function_id: Uuid,
    pub provider: String,
    pub repository: String,
    pub clone_url: String,
    pub branch: String,
    pub subdirectory: String,
    /// Sealed (`shared::secrets`); opened only to check a delivery's signature.
    pub secret_sealed: String,
    /// Sealed JSON of the clone credentials; opened only by the worker's fetch.
    pub credentials_sealed: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub struct NewBinding<'a> {
    pub id: Uuid,
    pub function_id: Uuid,
    pub provider: &'a str,
    pub repository: &'a str,
    pub clone_url: &'a str,
    pub branch: &'a str,
    pub subdirectory: &'a str,
    pub secret_sealed: &'a str,
    pub credentials_sealed: Option<&'a str>,
}

/// False when the function already has the same binding.
pub async fn insert_binding(conn: &mut PgConnection, new: &NewBinding<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        r#"INSERT INTO git_bindings
             (id, function_id, provider, repository, clone_url, branch, subdirectory,
              secret_sealed, credentials_sealed)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (function_id, provider, repository, branch, subdirectory) DO NOTHING"#,
        new.id,
        new.function_id,
        new.provider,
        new.repository,
        new.clone_url,
        new.branch,
        new.subdirectory,
        new.secret_sealed,
        new.credentials_sealed
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn bindings_of_function(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<Vec<BindingRow>> {
    sqlx::query_as!(
        BindingRow,
        r#"SELECT id, function_id, provider, repository, clone_url, branch, subdirectory, secret_sealed,
                  credentials_sealed, created_at
           FROM git_bindings WHERE function_id = $1 ORDER BY created_at, id"#,
        function_id
    )
    .fetch_all(conn)
    .await
}

pub async fn get_binding(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<BindingRow>> {
    sqlx::query_as!(
        BindingRow,
        r#"SELECT id, function_id, provider, repository, clone_url, branch, subdirectory, secret_sealed,
                  credentials_sealed, created_at
           FROM git_bindings WHERE id = $1"#,
        id
    )
        .fetch_optional(conn)
        .await
}

/// Every binding of a provider's repository that the shared URL serves (those made before
/// bindings had URLs of their own), whichever function it feeds. Providers treat repository
/// names case-insensitively, and so does this.
pub async fn bindings_for_repository(
    conn: &mut PgConnection,
    provider: &str,
    repository: &str,
) -> sqlx::Result<Vec<BindingRow>> {
    sqlx::query_as!(
        BindingRow,
        r#"SELECT id, function_id, provider, repository, clone_url, branch, subdirectory, secret_sealed,
                  credentials_sealed, created_at
           FROM git_bindings
           WHERE provider = $1 AND lower(repository) = lower($2) AND shared_url
           ORDER BY created_at, id"#,
        provider,
        repository
    )
    .fetch_all(conn)
    .await
}

pub async fn delete_binding(
    conn: &mut PgConnection,
    function_id: Uuid,
    id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query!(
        "DELETE FROM git_bindings WHERE id = $1 AND function_id = $2",
        id,
        function_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A purged function takes no more pushes, and its secrets go with it.
pub async fn delete_bindings_of_function(
    conn: &mut PgConnection,
    function_id: Uuid,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        "DELETE FROM git_bindings WHERE function_id = $1",
        function_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Claims a delivery id for this transaction. A second claim of the same id waits for the first
/// transaction and then finds it taken: the answer the first delivery got, to repeat.
pub enum DeliveryClaim {
    New,
    Seen { response: serde_json::Value },
}

pub async fn claim_delivery(
    conn: &mut PgConnection,
    provider: &str,
    scope: &str,
    delivery_id: &str,
    event: &str,
) -> sqlx::Result<DeliveryClaim> {
    let inserted = sqlx::query!(
        r#"INSERT INTO webhook_deliveries (provider, scope, delivery_id, event, response)
           VALUES ($1, $2, $3, $4, 'null'::jsonb)
           ON CONFLICT (provider, scope, delivery_id) DO NOTHING"#,
        provider,
        scope,
        delivery_id,
        event
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(DeliveryClaim::New);
    }
    let response = sqlx::query_scalar!(
        "SELECT response FROM webhook_deliveries
         WHERE provider = $1 AND scope = $2 AND delivery_id = $3",
        provider,
        scope,
        delivery_id
    )
    .fetch_one(conn)
    .await?;
    Ok(DeliveryClaim::Seen { response })
}

pub async fn record_delivery_response(
    conn: &mut PgConnection,
    provider: &str,
    scope: &str,
    delivery_id: &str,
    response: &serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhook_deliveries SET response = $4
         WHERE provider = $1 AND scope = $2 AND delivery_id = $3",
        provider,
        scope,
        delivery_id,
        response
    )
    .execute(conn)
    .await?;
    Ok(())
}
