//! `client.scenes()`: scene composition tasks — `POST /api/public/scenes/render` (202, tokens
//! reserved), `GET /api/public/scenes/render/{id}` — plus [`Scenes::wait_for_render`].

use creapic_core::wire::{JobStatusWire, Render, RenderResponse, SceneRenderRequest};
use reqwest::Method;

use crate::client::{Auth, Call, Client, PostCall};
use crate::wait::{Acceptance, Progress, Wait, WaitOptions};

/// Scene renders.
#[derive(Debug, Clone, Copy)]
pub struct Scenes<'a> {
    client: &'a Client,
}

impl<'a> Scenes<'a> {
    pub(crate) fn new(client: &'a Client) -> Self {
        Scenes { client }
    }

    /// Accepts a render task; poll it with [`Scenes::get`] or wait with
    /// [`Scenes::wait_for_render`].
    pub fn render(&self, request: SceneRenderRequest) -> PostCall<'a, RenderResponse> {
        let url = self.client.endpoint(&["api", "public", "scenes", "render"]);
        self.client.post(url, Auth::ApiKey, &request)
    }

    /// A render of the key's organization.
    pub fn get(&self, id: &str) -> Call<'a, RenderResponse> {
        let spec = super::path_id("render_id", id).map(|()| {
            let url = self
                .client
                .endpoint(&["api", "public", "scenes", "render", id]);
            self.client.spec(Method::GET, url, Auth::ApiKey)
        });
        self.client.json_call(spec)
    }

    /// Polls the render until it is finished and returns it (check `status` and `error`).
    /// Progress is 0/1 until then. Fails with [`crate::Error::ExceededMaxWait`] when
    /// `options.max_wait` runs out first.
    pub fn wait_for_render(&self, id: &str, options: WaitOptions) -> Wait<'a, Render> {
        let handle = *self;
        let id = id.to_owned();
        Wait::new(
            self.client.time(),
            options,
            move || {
                let call = handle.get(&id);
                async move { call.send().await.map(|r| r.render) }
            },
            accept_render,
        )
    }
}

fn accept_render(render: &Render) -> Acceptance {
    let progress = Progress {
        completed: u32::from(render.status == JobStatusWire::Completed),
        failed: u32::from(matches!(
            render.status,
            JobStatusWire::Failed | JobStatusWire::Canceled
        )),
        total: 1,
    };
    if render.status.is_terminal() {
        Acceptance::Done(progress)
    } else {
        Acceptance::Pending(progress)
    }
}
