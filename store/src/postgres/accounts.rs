//! Accounts, sessions and vehicles on PostgreSQL.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parkd_core::account::{Email, Role, VehicleProfile};
use tokio_postgres::Row;

use super::{PostgresStore, col, pg_err};
use crate::common::{class_str, parse_class, parse_email, parse_plate, parse_role, token_hash};
use crate::{AccountStore, SessionRow, StoreError, StoreResult, User, VehicleRow};

const USER_COLUMNS: &str = "user_id, email, password_hash, role, display_name, disabled, \
                            created_at, password_changed_at";
const SESSION_COLUMNS: &str = "session_id, user_id, token_sha256, created_at, last_seen_at, \
                               expires_at, user_agent, ip, revoked_at, revoked_reason";
const VEHICLE_COLUMNS: &str =
    "vehicle_id, user_id, plate, class, ev, accessible_permit, label, created_at";

fn user_from(row: &Row, at: usize) -> StoreResult<User> {
    const T: &str = "users";
    Ok(User {
        id: col(row, at, T)?,
        email: parse_email(col(row, at + 1, T)?)?,
        password_hash: col(row, at + 2, T)?,
        role: parse_role(col(row, at + 3, T)?)?,
        display_name: col(row, at + 4, T)?,
        disabled: col(row, at + 5, T)?,
        created_at: col(row, at + 6, T)?,
        password_changed_at: col(row, at + 7, T)?,
    })
}

fn session_from(row: &Row) -> StoreResult<SessionRow> {
    const T: &str = "sessions";
    Ok(SessionRow {
        id: col(row, 0, T)?,
        user_id: col(row, 1, T)?,
        token_sha256: token_hash(col(row, 2, T)?, T)?,
        created_at: col(row, 3, T)?,
        last_seen_at: col(row, 4, T)?,
        expires_at: col(row, 5, T)?,
        user_agent: col(row, 6, T)?,
        ip: col(row, 7, T)?,
        revoked_at: col(row, 8, T)?,
        revoked_reason: col(row, 9, T)?,
    })
}

fn vehicle_from(row: &Row) -> StoreResult<VehicleRow> {
    const T: &str = "vehicles";
    Ok(VehicleRow {
        id: col(row, 0, T)?,
        user_id: col(row, 1, T)?,
        plate: parse_plate(col(row, 2, T)?)?,
        profile: VehicleProfile {
            class: parse_class(col(row, 3, T)?)?,
            ev: col(row, 4, T)?,
            accessible_permit: col(row, 5, T)?,
        },
        label: col(row, 6, T)?,
        created_at: col(row, 7, T)?,
    })
}

impl PostgresStore {
    async fn one_user(&self, column: &'static str, value: &str) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = $1");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let row = client
            .query_opt(&statement, &[&value])
            .await
            .map_err(pg_err)?;
        row.map(|row| user_from(&row, 0)).transpose()
    }
}

#[async_trait]
impl AccountStore for PostgresStore {
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let client = self.client().await?;
        let sql =
            format!("INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)");
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        client
            .execute(
                &statement,
                &[
                    &user.id,
                    &user.email.as_str(),
                    &user.password_hash,
                    &user.role.as_str(),
                    &user.display_name,
                    &user.disabled,
                    &user.created_at,
                    &user.password_changed_at,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn user(&self, id: &str) -> StoreResult<Option<User>> {
        self.one_user("user_id", id).await
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<User>> {
        self.one_user("email", email.as_str()).await
    }

    async fn users(&self) -> StoreResult<Vec<User>> {
        let client = self.client().await?;
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY email");
        let rows = client.query(&sql, &[]).await.map_err(pg_err)?;
        rows.iter().map(|row| user_from(row, 0)).collect()
    }

    async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        at: DateTime<Utc>,
        keep: Option<&str>,
    ) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let updated = tx
            .execute(
                "UPDATE users SET password_hash = $2, password_changed_at = $3
                 WHERE user_id = $1",
                &[&user_id, &password_hash, &at],
            )
            .await
            .map_err(pg_err)?;
        if updated == 0 {
            return Err(StoreError::Conflict(format!("no account {user_id}")));
        }
        let revoked = tx
            .execute(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = 'password_changed'
                 WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
                   AND ($3::text IS NULL OR session_id <> $3)",
                &[&user_id, &at, &keep],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(revoked)
    }

    async fn set_user_disabled(
        &self,
        user_id: &str,
        disabled: bool,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let updated = tx
            .execute(
                "UPDATE users SET disabled = $2 WHERE user_id = $1",
                &[&user_id, &disabled],
            )
            .await
            .map_err(pg_err)?;
        if disabled {
            tx.execute(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = 'disabled'
                 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&user_id, &at],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(updated > 0)
    }

    async fn set_role(&self, user_id: &str, role: Role) -> StoreResult<bool> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE users SET role = $2 WHERE user_id = $1",
                &[&user_id, &role.as_str()],
            )
            .await
            .map_err(pg_err)?;
        Ok(updated > 0)
    }

    async fn create_session(&self, s: &SessionRow) -> StoreResult<()> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO sessions ({SESSION_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        client
            .execute(
                &statement,
                &[
                    &s.id,
                    &s.user_id,
                    &s.token_sha256.as_slice(),
                    &s.created_at,
                    &s.last_seen_at,
                    &s.expires_at,
                    &s.user_agent,
                    &s.ip,
                    &s.revoked_at,
                    &s.revoked_reason,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn session_by_token(
        &self,
        token_sha256: &[u8; 32],
    ) -> StoreResult<Option<(SessionRow, User)>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT s.session_id, s.user_id, s.token_sha256, s.created_at, s.last_seen_at,
                        s.expires_at, s.user_agent, s.ip, s.revoked_at, s.revoked_reason,
                        u.user_id, u.email, u.password_hash, u.role, u.display_name,
                        u.disabled, u.created_at, u.password_changed_at
                 FROM sessions s JOIN users u ON u.user_id = s.user_id
                 WHERE s.token_sha256 = $1",
            )
            .await
            .map_err(pg_err)?;
        let row = client
            .query_opt(&statement, &[&token_sha256.as_slice()])
            .await
            .map_err(pg_err)?;
        match row {
            Some(row) => Ok(Some((session_from(&row)?, user_from(&row, 10)?))),
            None => Ok(None),
        }
    }

    async fn touch_session(&self, session_id: &str, at: DateTime<Utc>) -> StoreResult<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached("UPDATE sessions SET last_seen_at = $2 WHERE session_id = $1")
            .await
            .map_err(pg_err)?;
        client
            .execute(&statement, &[&session_id, &at])
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn revoke_session(
        &self,
        user_id: &str,
        session_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let updated = client
            .execute(
                "UPDATE sessions SET revoked_at = $3, revoked_reason = $4
                 WHERE user_id = $1 AND session_id = $2 AND revoked_at IS NULL",
                &[&user_id, &session_id, &at, &reason],
            )
            .await
            .map_err(pg_err)?;
        Ok(updated > 0)
    }

    async fn active_sessions(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<SessionRow>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {SESSION_COLUMNS} FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
             ORDER BY created_at DESC"
        );
        let rows = client
            .query(&sql, &[&user_id, &now])
            .await
            .map_err(pg_err)?;
        rows.iter().map(session_from).collect()
    }

    async fn add_vehicle(&self, v: &VehicleRow) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO vehicles (vehicle_id, user_id, plate, plate_key, class, ev,
                                       accessible_permit, label, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &v.id,
                    &v.user_id,
                    &v.plate.as_str(),
                    &v.plate.key(),
                    &class_str(v.profile.class),
                    &v.profile.ev,
                    &v.profile.accessible_permit,
                    &v.label,
                    &v.created_at,
                ],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn vehicles(&self, user_id: &str) -> StoreResult<Vec<VehicleRow>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VEHICLE_COLUMNS} FROM vehicles WHERE user_id = $1
             ORDER BY created_at, vehicle_id"
        );
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let rows = client
            .query(&statement, &[&user_id])
            .await
            .map_err(pg_err)?;
        rows.iter().map(vehicle_from).collect()
    }

    async fn delete_vehicle(&self, user_id: &str, vehicle_id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let deleted = client
            .execute(
                "DELETE FROM vehicles WHERE user_id = $1 AND vehicle_id = $2",
                &[&user_id, &vehicle_id],
            )
            .await
            .map_err(pg_err)?;
        Ok(deleted > 0)
    }
}
