//! `DELETE /dicomweb/studies/{study}[/series/{series}[/instances/{instance}]]`:
//! removes instances from the manifest. Their records stay in the segments
//! until space is reclaimed, and the deletions appear in the study's next
//! revision.
//!
//! The response is 204 No Content when something was deleted, 404 with a JSON reason
//! when nothing matched, 503 when the manifest cannot take the request.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::manifest::{DeleteScope, Manifest};

/// Routes this module serves, for mounting inside the `/dicomweb` scope.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .route("/studies/{study}", web::delete().to(delete_study))
        .route("/studies/{study}/series/{series}", web::delete().to(delete_series))
        .route("/studies/{study}/series/{series}/instances/{instance}", web::delete().to(delete_instance));
}

pub async fn delete_study(manifest: web::Data<Manifest>, path: web::Path<String>) -> HttpResponse {
    let study = path.into_inner();
    delete(&manifest, DeleteScope { study_instance_uid: study, series_instance_uid: None, sop_instance_uid: None }).await
}

pub async fn delete_series(manifest: web::Data<Manifest>, path: web::Path<(String, String)>) -> HttpResponse {
    let (study, series) = path.into_inner();
    delete(&manifest, DeleteScope { study_instance_uid: study, series_instance_uid: Some(series), sop_instance_uid: None })
        .await
}

pub async fn delete_instance(manifest: web::Data<Manifest>, path: web::Path<(String, String, String)>) -> HttpResponse {
    let (study, series, instance) = path.into_inner();
    let scope = DeleteScope { study_instance_uid: study, series_instance_uid: Some(series), sop_instance_uid: Some(instance) };
    delete(&manifest, scope).await
}

async fn delete(manifest: &Manifest, scope: DeleteScope) -> HttpResponse {
    match manifest.delete(scope.clone()).await {
        Ok(0) => HttpResponse::NotFound()
            .content_type("application/json")
            .body(json!({"error": "no instance matches", "scope": describe(&scope)}).to_string()),
        Ok(_) => HttpResponse::NoContent().finish(),
        Err(error) => {
            tracing::warn!(scope = describe(&scope), %error, "deleting instances failed");
            HttpResponse::ServiceUnavailable()
            .content_type("application/json")
            .body(json!({"error": error.to_string()}).to_string())
        }
    }
}

fn describe(scope: &DeleteScope) -> String {
    let mut text = format!("study {}", scope.study_instance_uid);
    if let Some(series) = &scope.series_instance_uid {
        text.push_str(&format!(", series {series}"));
    }
    if let Some(instance) = &scope.sop_instance_uid {
        text.push_str(&format!(", instance {instance}"));
    }
    text
}
