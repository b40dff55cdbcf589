// The live connection to /ws (protocol: docs/protocol.md, frames in schemas.py).
//
// It reconnects on its own with exponential backoff (0.5 s doubling to 10 s, with
// jitter so a restarted server is not hit by every tab at once) and opens every
// connection with `resume {last_seq, epoch, taskIds}` as its first frame: the hub
// subscribes the socket to the page's tasks and replays what it missed, or answers `gap`
// when it cannot (the page then refetches job state over REST). Channels (telemetry) are
// not part of resume and are subscribed after it.
//
// Heartbeats both ways: a ping every PING_MS keeps the server's idle check (nothing
// received for 2 x its 15 s ping interval) from closing a quiet socket, and a socket that
// has heard nothing for DEAD_MS (the server's heartbeat comes every 15 s) is taken for
// dead and replaced.

const PING_MS = 10_000;
const DEAD_MS = 35_000;
const BACKOFF_MS = [500, 10_000];
/** Closes that reconnecting cannot cure, by their name in the server's `Close` codes. */
const FATAL_CLOSE = ["UNAUTHORIZED", "ORIGIN_DENIED"];

export class LiveSocket {
  /**
   * @param {string} url ws:// or wss:// URL of /ws
   * @param {{onFrame: (frame) => void, onState: (state: string, detail?: string) => void,
   *   closeCodes: Object<string, number>}} hooks closeCodes: the hub's close codes by name
   *   (GET /api/pipelines `constants.close_codes`)
   */
  constructor(url, { onFrame, onState, closeCodes }) {
    this.url = url;
    this.onFrame = onFrame;
    this.onState = onState;
    // code -> what the page says about it ("origin denied")
    this.fatal = new Map(
      FATAL_CLOSE.map((name) => [closeCodes[name], name.toLowerCase().replaceAll("_", " ")]),
    );
    this.taskIds = new Set();
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
    this.lastReceived = Date.now();
    ws.onopen = () => {
      this.attempt = 0;
      this.connects += 1;
      this.#greet();
      this.pinger = setInterval(() => this.#heartbeat(), PING_MS);
      this.onState("open");
    };
    ws.onmessage = (event) => this.#receive(event.data);
    ws.onclose = (event) => {
      clearInterval(this.pinger);
      if (this.ws !== ws) return;
      const fatal = this.fatal.get(event.code);
      if (fatal) {
        this.onState("closed", `${fatal}: ${event.reason || event.code}`);
        return;
      }
      this.#retryLater(event.reason || `code ${event.code}`);
    };
  }

  // What a (re)connected socket says first: resume (a fresh page has no epoch yet and
  // asks from seq 0), then the channel subscriptions resume does not cover.
  #greet() {
    const resume = { type: "resume", last_seq: this.lastSeq, taskIds: [...this.taskIds] };
    if (this.epoch !== null) resume.epoch = this.epoch;
    this.send(resume);
    for (const channel of this.channels) this.send({ type: "subscribe", channel });
  }

  #heartbeat() {
    if (Date.now() - this.lastReceived > DEAD_MS) {
      const dead = this.ws;
      this.ws = null; // its close event, whenever it comes, is no longer ours
      clearInterval(this.pinger);
      dead.close();
      this.#retryLater(`no frame for ${DEAD_MS / 1000} s`);
      return;
    }
    this.send({ type: "ping" });
  }

  #retryLater(reason) {
    const [base, cap] = BACKOFF_MS;
    const delay = Math.min(cap, base * 2 ** this.attempt) * (0.8 + 0.4 * Math.random());
    this.attempt += 1;
    this.onState("closed", `${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    setTimeout(() => this.#connect(), delay);
  }

  #receive(text) {
    this.lastReceived = Date.now();
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
