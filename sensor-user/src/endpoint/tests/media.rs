//! Media: legacy `/_matrix/media/*` (may need no token) and authenticated
//! `/_matrix/client/v1/media/*`.

use super::{assert_bare, check};
use crate::endpoint::{Class::*, MediaRef};

fn media(server: &str, media_id: &str) -> Option<MediaRef> {
    Some(MediaRef {
        server: server.to_owned(),
        media_id: media_id.to_owned(),
    })
}

#[test]
fn legacy_download_may_be_unauthenticated() {
    let e = check(
        "GET",
        "/_matrix/media/v3/download/matrix.org/AbCdEf123?allow_redirect=true",
        "media.download",
        MediaDownload,
    );
    assert_eq!(e.media, media("matrix.org", "AbCdEf123"));
    assert!(!e.authenticated_media);
}

#[test]
fn legacy_download_every_version_with_file_name() {
    for version in ["r0", "v3", "v1"] {
        let target = format!("/_matrix/media/{version}/download/example.org/xyz/report%20DR.pdf");
        let e = check("GET", &target, "media.download", MediaDownload);
        assert_eq!(e.media, media("example.org", "xyz"), "{target}");
    }
    check(
        "GET",
        "/_matrix/media/unstable/download/example.org/xyz",
        "media.other",
        OtherClient,
    );
}

#[test]
fn legacy_download_with_empty_file_name() {
    let e = check(
        "GET",
        "/_matrix/media/r0/download/example.org/xyz/",
        "media.download",
        MediaDownload,
    );
    assert_eq!(e.media, media("example.org", "xyz"));
}

#[test]
fn legacy_thumbnail() {
    let e = check(
        "GET",
        "/_matrix/media/r0/thumbnail/example.org%3A8448/xyz?width=800&height=600&method=scale",
        "media.thumbnail",
        MediaThumbnail,
    );
    assert_eq!(e.media, media("example.org:8448", "xyz"));
    assert!(!e.authenticated_media);
}

#[test]
fn authenticated_thumbnail() {
    let e = check(
        "GET",
        "/_matrix/client/v1/media/thumbnail/example.org/xyz?width=96&height=96&method=crop",
        "media.thumbnail",
        MediaThumbnail,
    );
    assert_eq!(e.media, media("example.org", "xyz"));
    assert!(e.authenticated_media);
}

#[test]
fn authenticated_download() {
    for tail in ["", "/", "/photo.jpg"] {
        let target = format!(
            "/_matrix/client/v1/media/download/matrix.org/AbCdEf123{tail}?timeout_ms=20000"
        );
        let e = check("GET", &target, "media.download", MediaDownload);
        assert_eq!(e.media, media("matrix.org", "AbCdEf123"), "{target}");
        assert!(e.authenticated_media, "{target}");
    }
}

#[test]
fn authenticated_media_only_under_v1() {
    let e = check(
        "GET",
        "/_matrix/client/v3/media/download/matrix.org/abc",
        "client.other",
        OtherClient,
    );
    assert_bare(&e);
    assert!(!e.authenticated_media);
}

#[test]
fn media_config_and_preview() {
    check(
        "GET",
        "/_matrix/media/v3/config",
        "media.config",
        OtherClient,
    );
    assert!(
        check(
            "GET",
            "/_matrix/client/v1/media/config",
            "media.config",
            OtherClient
        )
        .authenticated_media
    );
    check(
        "GET",
        "/_matrix/media/r0/preview_url?url=https%3A%2F%2Fexample.org",
        "media.preview_url",
        OtherClient,
    );
    check(
        "GET",
        "/_matrix/client/v1/media/preview_url?url=x&ts=1",
        "media.preview_url",
        OtherClient,
    );
}

#[test]
fn upload_and_create() {
    check(
        "POST",
        "/_matrix/media/v3/upload?filename=a.png",
        "media.upload",
        MediaUpload,
    );
    check(
        "GET",
        "/_matrix/media/v3/upload",
        "media.other",
        OtherClient,
    );
    let e = check(
        "PUT",
        "/_matrix/media/v3/upload/example.org/abc",
        "media.upload",
        MediaUpload,
    );
    assert_eq!(e.media, media("example.org", "abc"));
    check(
        "PUT",
        "/_matrix/media/r0/upload/example.org/abc",
        "media.other",
        OtherClient,
    );
    check(
        "POST",
        "/_matrix/media/v1/create",
        "media.create",
        MediaUpload,
    );
    check(
        "POST",
        "/_matrix/media/v3/create",
        "media.other",
        OtherClient,
    );
}
