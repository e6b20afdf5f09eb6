//! CRM records (leads, contacts, deals), organization settings, and people's links.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{OpResult, Ops, check_page, default_limit};
use crate::store::{
    ContactChange, Deal, ImportSummary, LinkChange, LinkRequest, NewDeal, NewPerson, OrgSettings, Person, PersonKind,
    ThreadView,
};

/// A page of leads, contacts or deals.
#[derive(Debug, Clone, Deserialize, Serialize, IntoParams, clap::Args)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this organization.
    #[arg(long)]
    #[serde(default)]
    pub org: Option<String>,
    /// Page size, 1 to 1000.
    #[arg(long, default_value_t = super::DEFAULT_LIMIT)]
    #[serde(default = "default_limit")]
    #[param(minimum = 1, maximum = 1000, default = 100)]
    pub limit: i64,
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    #[param(minimum = 0, default = 0)]
    pub offset: i64,
}

/// An address to add to a lead or contact.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailInput {
    pub email: String,
}

/// Contacts to import: all or none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportInput {
    pub contacts: Vec<NewPerson>,
}

impl Ops {
    pub async fn list_people(&self, kind: PersonKind, query: &ListQuery) -> OpResult<Vec<Person>> {
        check_page(query.limit, query.offset)?;
        Ok(self.store.list_people(kind, query.org.as_deref(), query.limit, query.offset).await?)
    }

    /// Creates a lead or contact; its past mail is linked in the background.
    pub async fn add_person(&self, kind: PersonKind, new: NewPerson) -> OpResult<Person> {
        let person = self.store.add_person(kind, new).await?;
        self.relink_soon();
        Ok(person)
    }

    pub async fn show_person(&self, kind: PersonKind, id: i64) -> OpResult<Person> {
        Ok(self.store.person(kind, id).await?)
    }

    /// Adds an address to a lead or contact; past mail with it is linked in the background.
    pub async fn add_person_email(&self, kind: PersonKind, id: i64, input: EmailInput) -> OpResult<Person> {
        let person = self.store.add_person_email(kind, id, &input.email).await?;
        self.relink_soon();
        Ok(person)
    }

    /// Imports contacts, all or none; `progress` hears (done, total) as rows are written.
    pub async fn import_contacts(
        &self,
        input: ImportInput,
        progress: impl FnMut(u64, u64) + Send,
    ) -> OpResult<ImportSummary> {
        let summary = self.store.import_contacts_reporting(input.contacts, progress).await?;
        self.relink_soon();
        Ok(summary)
    }

    pub async fn update_contact(&self, id: i64, change: ContactChange) -> OpResult<Person> {
        let person = self.store.update_contact(id, change).await?;
        self.relink_soon();
        Ok(person)
    }

    pub async fn delete_contact(&self, id: i64) -> OpResult<()> {
        Ok(self.store.delete_contact(id).await?)
    }

    pub async fn list_deals(&self, query: &ListQuery) -> OpResult<Vec<Deal>> {
        check_page(query.limit, query.offset)?;
        Ok(self.store.list_deals(query.org.as_deref(), query.limit, query.offset).await?)
    }

    pub async fn add_deal(&self, new: NewDeal) -> OpResult<Deal> {
        Ok(self.store.add_deal(new).await?)
    }

    pub async fn show_deal(&self, id: i64) -> OpResult<Deal> {
        Ok(self.store.deal(id).await?)
    }

    pub async fn show_org_settings(&self, org: &str) -> OpResult<OrgSettings> {
        Ok(self.store.org_settings(org).await?)
    }

    /// Replaces an organization's settings (creating the organization when new); changed
    /// match rules re-key its addresses and relink its mail in the background.
    pub async fn set_org_settings(&self, org: &str, settings: OrgSettings) -> OpResult<OrgSettings> {
        let settings = self.store.set_org_settings(org, settings).await?;
        self.relink_soon();
        Ok(settings)
    }

    pub async fn show_thread(&self, id: i64) -> OpResult<ThreadView> {
        Ok(self.store.thread(id).await?)
    }

    /// A person links a message or thread to a record; the thread's later mail follows.
    pub async fn link(&self, request: &LinkRequest) -> OpResult<LinkChange> {
        let (target, kind, id) = request.parts()?;
        Ok(self.store.link(target, kind, id).await?)
    }

    /// A person unlinks a message or thread from a record; nothing re-links it automatically.
    pub async fn unlink(&self, request: &LinkRequest) -> OpResult<LinkChange> {
        let (target, kind, id) = request.parts()?;
        Ok(self.store.unlink(target, kind, id).await?)
    }
}
