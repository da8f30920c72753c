//! The `AlertProvider` resource (`alertproviders.flagger.app/v1beta1`): where alerts are sent.
//! No I/O.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::api::{metric_template::LocalObjectReference, schema::string_enum};

/// Every alert provider type Flagger's CRD accepts.
pub const ALERT_PROVIDERS: &[&str] = &["slack", "msteams", "discord", "rocket", "gchat"];

string_enum!(alert_provider_enum, ALERT_PROVIDERS);

/// An alert destination referenced by Canary alerts through `providerRef`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "flagger.app",
    version = "v1beta1",
    kind = "AlertProvider",
    namespaced,
    status = "AlertProviderStatus",
    category = "all",
    doc = "AlertProvider is the Schema for the AlertProvider API.",
    annotation("helm.sh/resource-policy", "keep"),
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("oneOf" = [{"required": ["type", "address"]}, {"required": ["type", "secretRef"]}]))]
pub struct AlertProviderSpec {
    /// Required through the `oneOf` above, as in Flagger's CRD.
    #[serde(default, rename = "type")]
    #[schemars(schema_with = "alert_provider_enum", transform = crate::api::schema::no_default)]
    pub type_: String,
    /// Channel (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// User name shown with the message (default `flagger`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Webhook URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// HTTP proxy URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Secret with `address` and optionally `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
}

/// AlertProvider status: declared by Flagger's CRD, never written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertProviderStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<crate::api::canary::CanaryCondition>>,
}

impl AlertProviderSpec {
    /// The channel (default `general`).
    pub fn channel(&self) -> &str {
        self.channel
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or("general")
    }

    /// The user name (default `flagger`).
    pub fn username(&self) -> &str {
        self.username
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or("flagger")
    }
}
