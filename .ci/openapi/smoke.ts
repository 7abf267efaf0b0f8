// Calls a running `creapic serve` through types openapi-typescript generated from its served
// document (generated/api.d.ts) and openapi-fetch, for every seed endpoint: generate an image,
// submit a bulk job and poll it, render a scene (a layer from the generated image, one inline
// PNG) and poll it, create an organization. `tsc --noEmit` checks every request and every use of a
// result against the document; at run time each answer must have the status the document names
// and its fields present with the stated types.
//
// Usage (from .ci/openapi-checks.sh): CREAPIC_BASE=http://… CREAPIC_KEY=… tsx smoke.ts
import createClient from "openapi-fetch";
import type { components, operations, paths } from "./generated/api.js";

type Schemas = components["schemas"];
// The results, named through the operation ids: tsc fails if an id disappears or changes.
type Generated = operations["generateImage"]["responses"][200]["content"]["application/json"];
type Submitted = operations["submitImageJob"]["responses"][202]["content"]["application/json"];
type Job = operations["getImageJob"]["responses"][200]["content"]["application/json"];
type Rendered = operations["renderScene"]["responses"][202]["content"]["application/json"];
type RenderStatus = operations["getSceneRender"]["responses"][200]["content"]["application/json"];
type Created = operations["createOrganization"]["responses"][201]["content"]["application/json"];

const base = required("CREAPIC_BASE");
const key = required("CREAPIC_KEY");
// An 8×8 opaque orange PNG, the inline layer.
const PNG_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAYAAADED76LAAAAEklEQVR4nGP478DwHx9mGBkKAAtej4ETCPjnAAAAAElFTkSuQmCC";
const POLL_MAX_MS = 60_000;
const POLL_DELAY_MS = 250;
const TERMINAL: ReadonlySet<Schemas["JobStatusWire"]> = new Set(["completed", "failed", "partial", "canceled"]);

const client = createClient<paths>({ baseUrl: base, headers: { Authorization: `Bearer ${key}` } });

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Error(`smoke (typescript): ${what}`);
}

/** The typed body of a call that must have answered `status`. */
function expect<T>(call: { data?: T; error?: unknown; response: Response }, status: number): T {
  check(
    call.response.status === status,
    `${call.response.url}: expected ${status}, got ${call.response.status} ${JSON.stringify(call.error)}`,
  );
  check(call.data !== undefined, `${call.response.url}: no body`);
  return call.data;
}

const isString = (v: unknown): v is string => typeof v === "string" && v !== "";
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;

async function waitFor<T>(fetch: () => Promise<T>, statusOf: (t: T) => Schemas["JobStatusWire"]): Promise<T> {
  const deadline = Date.now() + POLL_MAX_MS;
  for (;;) {
    const result = await fetch();
    if (TERMINAL.has(statusOf(result))) return result;
    check(Date.now() < deadline, `still ${statusOf(result)} after ${POLL_MAX_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, POLL_DELAY_MS));
  }
}

// Generate an image from text.
const generated: Generated = expect(
  await client.POST("/api/public/images/generate", {
    body: { source: { type: "text", text: "A lighthouse at dusk" }, aspectRatio: "16:9" },
  }),
  200,
);
check(isString(generated.generation.id), "generation.id is a string");
check(generated.generation.status === "completed", "generation is completed");
check(generated.generation.aspectRatio === "16:9", "aspect ratio 16:9");
check(isCount(generated.generation.tokensUsed), "generation.tokensUsed is a count");
check(isString(generated.generation.createdAt), "generation.createdAt is a string");
check(isString(generated.imageUrl), "imageUrl is a string");
check(isCount(generated.tokens), "tokens is a count");

// A bulk job, polled to completion.
const prompts = ["A red kite", "A blue kite"];
const submitted: Submitted = expect(await client.POST("/api/playground/images", { body: { prompts } }), 202);
check(isString(submitted.jobId), "jobId is a string");
check(submitted.totalImages === prompts.length, "totalImages counts the prompts");
check(isCount(submitted.creditsUsed) && isCount(submitted.credits), "credits are counts");
const job: Job = await waitFor(
  async () =>
    expect(
      await client.GET("/api/playground/images/{jobId}", { params: { path: { jobId: submitted.jobId } } }),
      200,
    ),
  (j) => j.status,
);
check(job.status === "completed", `the job completed (got ${job.status})`);
check(job.completedImages === prompts.length, "every image completed");
check(job.images.length === prompts.length, "one entry per prompt");
for (const image of job.images) {
  check(image.status === "succeeded", "each image succeeded");
  check(isString(image.url), "each image has a url");
  check(prompts.includes(image.prompt), "each image names its prompt");
}

// A scene: a text background, the generated image and an inline PNG as layers.
const layers: Schemas["SceneLayer"][] = [
  { source: { type: "generation", id: generated.generation.id }, x: 0.1, y: 0.1, scale: 0.4 },
  { source: { type: "base64", data: PNG_BASE64 }, x: 0.6, y: 0.6, scale: 0.2, opacity: 0.5 },
];
const rendered: Rendered = expect(
  await client.POST("/api/public/scenes/render", {
    body: { background: { type: "text", text: "A meadow" }, layers },
  }),
  202,
);
check(isString(rendered.render.id), "render.id is a string");
const render: RenderStatus = await waitFor(
  async () =>
    expect(
      await client.GET("/api/public/scenes/render/{id}", { params: { path: { id: rendered.render.id } } }),
      200,
    ),
  (r) => r.render.status,
);
check(render.render.status === "completed", `the render completed (got ${render.render.status})`);
check(isString(render.render.imageUrl), "the completed render has an imageUrl");

// An organization.
const name = `Smoke ${Math.random().toString(16).slice(2, 10)}`;
const created: Created = expect(
  await client.POST("/api/public/organizations/create", { body: { name } }),
  201,
);
check(isString(created.organization.id) && isString(created.organization.createdAt), "organization fields");
check(created.organization.name === name, "organization name");
check(created.role === "owner", "role is owner");

console.log("smoke (typescript): generate, bulk job, scene render and organization create — all typed, all OK");
