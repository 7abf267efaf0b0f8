//! `client.images()`: one image, generated synchronously (`POST /api/public/images/generate`,
//! scope `IMAGE_GENERATION`), and a generation read back by its id (`GET
//! /api/public/images/{id}`). The tokens are debited when the image is stored and refunded by
//! the server when the provider fails; a retry of the same call is never charged twice and
//! answers with the same `generation.id`.

use creapic_core::wire::{
    GenerateImageRequest, GenerateImageResponse, GenerationResponse, ImageSource,
};
use reqwest::Method;

use crate::client::{Auth, Call, Client, PostCall};

/// Image generation.
#[derive(Debug, Clone, Copy)]
pub struct Images<'a> {
    client: &'a Client,
}

impl<'a> Images<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Images { client }
    }

    /// Generates one image. Answers with the generation, a signed `imageUrl` (download it with
    /// [`crate::Client::media`]) and the tokens left.
    pub fn generate(&self, request: GenerateImageRequest) -> PostCall<'a, GenerateImageResponse> {
        let url = self
            .client
            .endpoint(&["api", "public", "images", "generate"]);
        self.client.post(url, Auth::ApiKey, &request)
    }

    /// A generation of the key's organization by its id (`generation.id` of a generate
    /// response), with a fresh signed `imageUrl` (none for a failed generation). Another
    /// organization's id is a 404 `not_found`, like an unknown one.
    pub fn get(&self, id: &str) -> Call<'a, GenerationResponse> {
        let spec = super::path_id("generation_id", id).map(|()| {
            let url = self.client.endpoint(&["api", "public", "images", id]);
            self.client.spec(Method::GET, url, Auth::ApiKey)
        });
        self.client.json_call(spec)
    }

    /// Generates one image from raw text, at the default aspect ratio (1:1) and quality.
    pub fn generate_text(&self, text: impl Into<String>) -> PostCall<'a, GenerateImageResponse> {
        self.generate(GenerateImageRequest {
            source: ImageSource::Text { text: text.into() },
            aspect_ratio: Default::default(),
            quality: Default::default(),
            organization_id: None,
        })
    }
}
