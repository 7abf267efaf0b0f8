"""Calls a running `creapic serve` through the client openapi-python-client generated from its
served document, for every seed endpoint: generate an image, submit a bulk job and poll it, render
a scene (a layer from the generated image, one inline PNG) and poll it, create an organization.
Each answer must parse into the generated model with its fields present and of the stated type.

Usage (from .ci/openapi-checks.sh): PYTHONPATH=DIR_OF_PACKAGE python smoke.py PACKAGE BASE KEY

Operations are found by operation id (the generator's module name), whatever tag holds them, so
the script names the contract — operation ids and schemas — and nothing the generator chose.
"""

import importlib
import pkgutil
import sys
import time
import uuid

PACKAGE, BASE, KEY = sys.argv[1], sys.argv[2], sys.argv[3]
# An 8×8 opaque orange PNG, the inline layer.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAYAAADED76LAAAAEklEQVR4nGP478DwHx9mGBkKAAtej4ETCPjnAAAAAElFTkSuQmCC"
)
POLL_MAX_S = 60.0
POLL_DELAY_S = 0.25
TERMINAL = {"completed", "failed", "partial", "canceled"}

client_module = importlib.import_module(f"{PACKAGE}.client")
models = importlib.import_module(f"{PACKAGE}.models")
api = importlib.import_module(f"{PACKAGE}.api")


def operation(operation_id_snake: str):
    """The generated module of one operation, under whichever tag package holds it."""
    for tag in pkgutil.iter_modules(api.__path__):
        try:
            return importlib.import_module(f"{api.__name__}.{tag.name}.{operation_id_snake}")
        except ModuleNotFoundError:
            continue
    raise SystemExit(f"the generated client has no operation {operation_id_snake}")


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"smoke (python): {what}")


def expect(response, status: int, model):
    """The parsed body of `response`, which must have `status` and parse into `model`."""
    check(
        int(response.status_code) == status,
        f"expected {status}, got {int(response.status_code)}: {response.content[:300]!r}",
    )
    check(
        isinstance(response.parsed, model),
        f"expected a {model.__name__}, got {type(response.parsed).__name__}",
    )
    return response.parsed


def is_str(value) -> bool:
    return isinstance(value, str) and value != ""


def is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def wait_for(fetch, status_of):
    """Polls `fetch` until `status_of` its result is terminal; bounded by POLL_MAX_S."""
    deadline = time.monotonic() + POLL_MAX_S
    while True:
        result = fetch()
        if status_of(result) in TERMINAL:
            return result
        check(time.monotonic() < deadline, f"still {status_of(result)} after {POLL_MAX_S} s")
        time.sleep(POLL_DELAY_S)


client = client_module.AuthenticatedClient(base_url=BASE, token=KEY, raise_on_unexpected_status=True)

# Generate an image from text.
generated = expect(
    operation("generate_image").sync_detailed(
        client=client,
        body=models.GenerateImageRequest.from_dict(
            {"source": {"type": "text", "text": "A lighthouse at dusk"}, "aspectRatio": "16:9"}
        ),
    ),
    200,
    models.GenerateImageResponse,
)
check(isinstance(generated.generation, models.Generation), "generation is a Generation")
check(is_str(generated.generation.id), "generation.id is a string")
check(generated.generation.status == models.JobStatusWire.COMPLETED, "generation is completed")
check(generated.generation.aspect_ratio.value == "16:9", "aspect ratio 16:9")
check(is_count(generated.generation.tokens_used), "generation.tokensUsed is a count")
check(is_str(generated.image_url), "imageUrl is a string")
check(is_count(generated.tokens), "tokens is a count")

# A bulk job, polled to completion.
prompts = ["A red kite", "A blue kite"]
submitted = expect(
    operation("submit_image_job").sync_detailed(
        client=client, body=models.BulkImagesRequest(prompts=prompts)
    ),
    202,
    models.BulkImagesResponse,
)
check(is_str(submitted.job_id), "jobId is a string")
check(submitted.total_images == len(prompts), "totalImages counts the prompts")
check(is_count(submitted.credits_used) and is_count(submitted.credits_), "credits are counts")
get_image_job = operation("get_image_job")
job = wait_for(
    lambda: expect(
        get_image_job.sync_detailed(uuid.UUID(submitted.job_id), client=client),
        200,
        models.JobStatusResponse,
    ),
    lambda j: j.status.value,
)
check(job.status == models.JobStatusWire.COMPLETED, f"the job completed (got {job.status})")
check(job.completed_images == len(prompts), "every image completed")
check(len(job.images) == len(prompts), "one entry per prompt")
for image in job.images:
    check(isinstance(image, models.JobImage), "images are JobImage")
    check(image.status == models.ItemStatusWire.SUCCEEDED, "each image succeeded")
    check(is_str(image.url), "each image has a url")
    check(image.prompt in prompts, "each image names its prompt")

# A scene: a text background, the generated image and an inline PNG as layers.
rendered = expect(
    operation("render_scene").sync_detailed(
        client=client,
        body=models.SceneRenderRequest.from_dict(
            {
                "background": {"type": "text", "text": "A meadow"},
                "layers": [
                    {
                        "source": {"type": "generation", "id": generated.generation.id},
                        "x": 0.1,
                        "y": 0.1,
                        "scale": 0.4,
                    },
                    {
                        "source": {"type": "base64", "data": PNG_BASE64},
                        "x": 0.6,
                        "y": 0.6,
                        "scale": 0.2,
                        "opacity": 0.5,
                    },
                ],
            }
        ),
    ),
    202,
    models.RenderResponse,
)
check(isinstance(rendered.render, models.Render), "render is a Render")
check(is_str(rendered.render.id), "render.id is a string")
get_scene_render = operation("get_scene_render")
render = wait_for(
    lambda: expect(
        get_scene_render.sync_detailed(uuid.UUID(rendered.render.id), client=client),
        200,
        models.RenderResponse,
    ).render,
    lambda r: r.status.value,
)
check(render.status == models.JobStatusWire.COMPLETED, f"the render completed (got {render.status})")
check(is_str(render.image_url), "the completed render has an imageUrl")

# An organization.
created = expect(
    operation("create_organization").sync_detailed(
        client=client,
        body=models.CreateOrganizationRequest(name=f"Smoke {uuid.uuid4().hex[:8]}"),
    ),
    201,
    models.CreateOrganizationResponse,
)
check(isinstance(created.organization, models.OrganizationWire), "organization is an OrganizationWire")
check(is_str(created.organization.id) and is_str(created.organization.created_at), "organization fields")
check(created.organization.name.startswith("Smoke "), "organization name")
check(created.role == "owner", "role is owner")

print("smoke (python): generate, bulk job, scene render and organization create — all typed, all OK")
