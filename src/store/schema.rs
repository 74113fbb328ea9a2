//! The database itself: bringing the schema up to date and checking that it
//! answers. Owns `migrations/{sqlite,postgres}`, whose numbering is identical on
//! both backends (a migration one backend cannot express is a commented no-op
//! there, never a gap).

use super::StoreError;
use async_trait::async_trait;

/// The schema and reachability of the database.
#[async_trait]
pub trait SchemaStore: Send + Sync {
    /// Bring the schema up to date.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Is the database reachable?
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Implement [`SchemaStore`] for a backend struct with a `pool` field.
macro_rules! impl_schema_store {
    ($store:ty, $migrator:expr, $after:path) => {
        #[async_trait::async_trait]
        impl $crate::store::schema::SchemaStore for $store {
            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                $migrator
                    .run(&self.pool)
                    .await
                    .map_err(|e| $crate::store::StoreError::Migrate(e.to_string()))?;
                $after(&self.pool).await
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

pub(super) use impl_schema_store;
