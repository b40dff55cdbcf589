// REST calls. Every error answer of the server is {"detail": ...} (plus "code" for some);
// ApiError carries it so the page can show the server's own words.

export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    super(body?.detail ?? `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.code ?? null;
    this.retryAfter = retryAfter;
  }
}

// A server started with a token is opened as /?token=...; the page passes it on.
export const TOKEN = new URLSearchParams(location.search).get("token");
const authHeaders = () => (TOKEN ? { authorization: `Bearer ${TOKEN}` } : {});

async function request(method, url, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new ApiError(0, { detail: `network error: ${error.message}` }, null);
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { detail: text.slice(0, 300) };
  }
  if (!response.ok) {
    const retry = Number(response.headers.get("retry-after")) || null;
    throw new ApiError(response.status, parsed, retry);
  }
  return parsed;
}

export const getPipelines = () => request("GET", "/api/pipelines");
export const preview = (body) => request("POST", "/api/pipelines/preview", body);
export const fallback = (body) => request("POST", "/api/pipelines/fallback", body);
export const getJob = (jobId) => request("GET", `/api/jobs/${encodeURIComponent(jobId)}`);
export const buildCommand = (body) => request("POST", "/api/commands/build", body);
export const reportMetrics = (body) => request("POST", "/api/metrics", body);

export function cancelJob(jobId, taskId) {
  const query = taskId ? `?taskId=${encodeURIComponent(taskId)}` : "";
  return request("DELETE", `/api/jobs/${encodeURIComponent(jobId)}${query}`);
}

export function listDatasets(offset, limit, q = "") {
  const query = new URLSearchParams({ offset: String(offset), limit: String(limit) });
  if (q) query.set("q", q);
  return request("GET", `/api/datasets?${query}`);
}

/** Keep an uploaded image under the data root: {path, bytes, created}. */
export const saveUpload = (body) => request("POST", "/api/datasets/uploads", body);

/** Fetch an image (a result PNG) as a Blob. */
export async function fetchBlob(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok)
    throw new ApiError(response.status, { detail: `GET ${url}: ${response.status}` });
  return response.blob();
}
