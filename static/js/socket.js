// The live connection to /ws (protocol: docs/protocol.md, frames in schemas.py).
//
// It reconnects on its own with exponential backoff (0.5 s doubling to 10 s, with
// jitter so a restarted server is not hit by every tab at once) and, once it has seen a
// frame, opens each new connection with `resume {last_seq, epoch, taskIds, job_ids}`: the
// hub re-subscribes the socket and replays what was missed, or answers `gap` when it
// cannot (the page then refetches job state over REST). Channels (telemetry) are not part
// of resume and are subscribed again after it. A ping every PING_MS keeps the server's
// idle check (2 x its ping interval, 30 s by default) from closing a quiet socket.

const PING_MS = 10_000;
const BACKOFF_MS = [500, 10_000];
const FATAL_CLOSE = new Map([
  [4001, "unauthorized"],
  [4003, "origin denied"],
]);

export class LiveSocket {
  /**
   * @param {string} url ws:// or wss:// URL of /ws
   * @param {{onFrame: (frame) => void, onState: (state: string, detail?: string) => void}} hooks
   */
  constructor(url, { onFrame, onState }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    this.taskIds = new Set();
    this.jobIds = new Set();
    this.channels = new Set();
    this.lastSeq = 0;
    this.epoch = null;
    this.attempt = 0;
    this.ws = null;
    this.pinger = null;
    this.nextRef = 1;
    this.connects = 0; // successful opens, for the debugging hook
  }

  get open() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  start() {
    this.#connect();
  }

  followTask(taskId) {
    if (!this.taskIds.has(taskId)) {
      this.taskIds.add(taskId);
      this.send({ type: "subscribe", taskId });
    }
  }

  followJob(jobId) {
    if (!this.jobIds.has(jobId)) {
      this.jobIds.add(jobId);
      this.send({ type: "subscribe", job_id: jobId });
    }
  }

  unfollowJob(jobId) {
    if (this.jobIds.delete(jobId)) this.send({ type: "unsubscribe", job_id: jobId });
  }

  watch(channel) {
    if (!this.channels.has(channel)) {
      this.channels.add(channel);
      this.send({ type: "subscribe", channel });
    }
  }

  /** Send a client frame now; false (nothing sent) while disconnected. */
  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify({ ref: String(this.nextRef++), ...frame }));
    return true;
  }

  #connect() {
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.connects += 1;
      this.#greet();
      this.pinger = setInterval(() => this.send({ type: "ping" }), PING_MS);
      this.onState("open");
    };
    ws.onmessage = (event) => this.#receive(event.data);
    ws.onclose = (event) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      const fatal = FATAL_CLOSE.get(event.code);
      if (fatal) {
        this.onState("closed", `${fatal}: ${event.reason || event.code}`);
        return;
      }
      this.#retryLater(event.reason || `code ${event.code}`);
    };
  }

  // What a (re)connected socket says first: resume when it has state to resume, then the
  // subscriptions resume does not cover.
  #greet() {
    if (this.epoch !== null) {
      this.send({
        type: "resume",
        last_seq: this.lastSeq,
        epoch: this.epoch,
        taskIds: [...this.taskIds],
        job_ids: [...this.jobIds],
      });
    } else {
      for (const taskId of this.taskIds) this.send({ type: "subscribe", taskId });
      for (const jobId of this.jobIds) this.send({ type: "subscribe", job_id: jobId });
    }
    for (const channel of this.channels) this.send({ type: "subscribe", channel });
  }

  #retryLater(reason) {
    const [base, cap] = BACKOFF_MS;
    const delay = Math.min(cap, base * 2 ** this.attempt) * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.onState("closed", `${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(() => this.#connect(), delay);
  }

  #receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      console.warn("ignoring a non-JSON frame", text);
      return;
    }
    if (frame.epoch && frame.epoch !== this.epoch) {
      // A new epoch is a restarted server: its seq starts again from 1.
      this.epoch = frame.epoch;
      this.lastSeq = 0;
    }
    // The hub stamps every frame from one counter and sends a socket its frames in
    // order, so the highest seq seen is where a resume should pick up.
    if (typeof frame.seq === "number") {
      this.lastSeq = Math.max(this.lastSeq, frame.seq);
    }
    this.onFrame(frame);
  }
}
