// What survives a reload: the tab's taskId (sessionStorage: the same tab keeps following its
// jobs, a new tab gets a new capability), the uploaded images (IndexedDB, by sha256, the
// last MAX_UPLOADS up to MAX_UPLOAD_BYTES in all) and the job rows (IndexedDB, the last
// MAX_JOBS). Storage can be missing or refused (private windows, quotas): every call then
// quietly does nothing, and the page works as before, only forgetful.

const DB = "playground-rt";
const VERSION = 1;
const MAX_UPLOADS = 5;
const MAX_UPLOAD_BYTES = 200 * 1024 * 1024;
const MAX_JOBS = 20;
const TASK_KEY = "playground-rt.taskId";

function newTaskId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; a page served over plain http to another host
  // still has getRandomValues.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");
}

/** This tab's taskId: kept across reloads so running jobs can be followed again. */
export function tabTaskId() {
  try {
    const kept = sessionStorage.getItem(TASK_KEY);
    if (kept && /^[A-Za-z0-9_.:-]{1,128}$/.test(kept)) return kept;
    const made = newTaskId();
    sessionStorage.setItem(TASK_KEY, made);
    return made;
  } catch {
    return newTaskId();
  }
}

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

let opened = null;

function open() {
  if (typeof indexedDB === "undefined") return Promise.resolve(null);
  opened ??= new Promise((resolve) => {
    const req = indexedDB.open(DB, VERSION);
    req.onupgradeneeded = () => {
      req.result.createObjectStore("uploads", { keyPath: "sha256" });
      req.result.createObjectStore("jobs", { keyPath: "id" });
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => resolve(null);
    req.onblocked = () => resolve(null);
  });
  return opened;
}

async function store(name, mode) {
  const db = await open();
  return db ? db.transaction(name, mode).objectStore(name) : null;
}

async function all(name) {
  try {
    const s = await store(name, "readonly");
    return s ? await request(s.getAll()) : [];
  } catch {
    return [];
  }
}

/** Keep an uploaded file ({sha256, name, type, blob}); the oldest go past the bounds. */
export async function saveUpload({ sha256, name, blob }) {
  try {
    const kept = (await all("uploads")).filter((u) => u.sha256 !== sha256);
    kept.sort((a, b) => b.saved - a.saved);
    const s = await store("uploads", "readwrite");
    if (!s) return;
    let total = blob.size;
    kept.forEach((u, i) => {
      total += u.blob.size;
      if (i + 1 >= MAX_UPLOADS || total > MAX_UPLOAD_BYTES) s.delete(u.sha256);
    });
    await request(s.put({ sha256, name, type: blob.type, blob, saved: Date.now() }));
  } catch (error) {
    console.warn("could not keep the upload:", error?.message ?? error);
  }
}

/** The kept upload with this hash ({sha256, name, blob}) or null. */
export async function loadUpload(sha256) {
  try {
    const s = await store("uploads", "readonly");
    return s ? ((await request(s.get(sha256))) ?? null) : null;
  } catch {
    return null;
  }
}

/** Keep a job row's record ({id, taskId, label, state, created, ...}). */
export async function saveJob(record) {
  try {
    const s = await store("jobs", "readwrite");
    if (!s) return;
    await request(s.put(record));
    const kept = (await request(s.getAll())).sort((a, b) => b.created - a.created);
    for (const old of kept.slice(MAX_JOBS)) s.delete(old.id);
  } catch (error) {
    console.warn("could not keep the job row:", error?.message ?? error);
  }
}

/** The kept job rows of `taskId`, oldest first. */
export async function loadJobs(taskId) {
  const rows = (await all("jobs")).filter((j) => j.taskId === taskId);
  return rows.sort((a, b) => a.created - b.created);
}
