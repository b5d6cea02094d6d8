/**
 * The kill-switch stream (GET /fleet/v1/stream): one LISTEN per replica
 * (store.listen), fanned out to the sidecars connected to this replica.
 *
 * - A client gets a snapshot first: the highest committed seq S, read before
 *   the switches in force, then the switches that concern its agent. A change
 *   committed between the two reads is in the snapshot and is sent again as a
 *   change after it; both ops are idempotent by switch id, so nothing is lost
 *   and nothing breaks.
 * - Then every change with seq > S that concerns its agent, in seq order: the
 *   feed reads `changesSince(last)` after each NOTIFY (and after every
 *   reconnect of the listening connection) and keeps the recent ones in a
 *   ring, from which a client that joined after them is caught up.
 * - A ping every 2 s, only while the feed is listening, caught up, and has
 *   heard from PostgreSQL within the last two intervals (each interval reads
 *   the highest seq through the pool, with a timeout): a replica that lost
 *   PostgreSQL — even silently, a half-open connection that never errors —
 *   stops vouching for freshness, so its sidecars go stale (and fail closed)
 *   instead of trusting a dead feed. A seq that read shows and no NOTIFY
 *   announced is read as if announced.
 * - Backpressure: a client whose socket does not drain (more than
 *   `maxBufferedBytes` queued, or a write not drained within `drainTimeoutMs`)
 *   is dropped; it reconnects and starts over with a snapshot.
 */
import type { ServerResponse } from "node:http";
import { switchView } from "../containment/containment";
import { normalizeError, toolgateError } from "../errors";
import { type Component, type ComponentStatus, notRunning } from "../shared/lifecycle";
import type { Logger } from "../shared/log";
import type { FleetStore, SwitchChange, SwitchRow } from "./store/types";

export interface SwitchFeedOptions {
  store: FleetStore;
  log: Logger;
  /** Ping interval (default 2000 ms). */
  pingMs?: number;
  /** Queued bytes beyond which a client is dropped (default 256 KiB). */
  maxBufferedBytes?: number;
  /** A write that has not drained after this long drops the client (default 10 s). */
  drainTimeoutMs?: number;
  /** Recent changes kept for clients that join after them (default 1000). */
  ringSize?: number;
  /**
   * Streams one agent's credentials may hold open on this replica at once,
   * counted from the moment one is asked for (default 1024): a sidecar
   * credential cannot pin the replica's sockets, memory and snapshot reads.
   */
  maxStreamsPerAgent?: number;
  /** Streams this replica serves at once, every agent together (default 10000). */
  maxStreams?: number;
  /** A stream client connected or left (the sidecars view). */
  onClient?: (c: StreamClientInfo, event: "connected" | "seen" | "closed") => void;
  now?: () => number;
}

export interface StreamClientInfo {
  agentId: string;
  instance: string | undefined;
  connectedAt: number;
}

interface Client extends StreamClientInfo {
  res: ServerResponse;
  /** The highest seq this client has been sent (snapshot or change). */
  cursor: number;
  /** Set while a write waits for 'drain'. */
  drainTimer: NodeJS.Timeout | undefined;
  /** Ends the stream when the client's credential expires. */
  expiryTimer: NodeJS.Timeout | undefined;
  closed: boolean;
}

/** Whether a switch concerns an agent's sidecars: no agent in its scope, or this one. */
export const concerns = (s: SwitchRow, agentId: string): boolean =>
  s.scope.agent === undefined || s.scope.agent === agentId;

export class SwitchFeed implements Component {
  readonly name = "switch_stream";
  private readonly clients = new Set<Client>();
  /** Streams held (asked for and not yet ended) per agent, and in all. */
  private readonly held = new Map<string, number>();
  private heldTotal = 0;
  private readonly ring: SwitchChange[] = [];
  /** The highest seq read from the store (changes up to it are in the ring or older). */
  private lastSeq = 0;
  /** The highest seq trimmed off the ring (a client whose snapshot is older cannot be caught up). */
  private trimmedSeq = 0;
  /** The highest seq a NOTIFY (or a reconnect) announced. */
  private wantedSeq = 0;
  private listening = false;
  /** When the last probe that PostgreSQL answered was started (performance.now(): freshness is real time, whatever `now` says). */
  private heardAt = 0;
  private probing = false;
  private listenError: string | undefined;
  private readError: string | undefined;
  private reading: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private started = false;
  private stopped = false;
  private readonly now: () => number;

  constructor(private readonly opts: SwitchFeedOptions) {
    this.now = opts.now ?? Date.now;
  }

  async start(): Promise<void> {
    this.started = true;
    const asked = performance.now();
    this.lastSeq = await this.opts.store.currentSeq();
    this.wantedSeq = this.lastSeq;
    this.heardAt = asked;
    this.unlisten = await this.opts.store.listen({
      onSeq: (seq) => this.announced(seq),
      onState: (connected, error) => {
        this.listening = connected;
        this.listenError = connected ? undefined : (error?.message ?? "disconnected");
        if (!connected)
          this.opts.log.error("the kill-switch LISTEN connection is down; reconnecting", {
            event: "control.listen_down",
            error: this.listenError,
          });
        else this.opts.log.info("kill-switch LISTEN connected", { event: "control.listen_up" });
      },
    });
    this.pingTimer = setInterval(() => this.ping(), this.pingMs);
    this.pingTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
    for (const c of [...this.clients]) this.drop(c, undefined);
    const unlisten = this.unlisten;
    this.unlisten = undefined;
    await unlisten?.().catch(() => undefined);
    await this.reading?.catch(() => undefined);
  }

  /** OK while listening and caught up; ERROR with what is wrong otherwise. */
  status(): ComponentStatus {
    const idle = notRunning(this.started, this.stopped);
    if (idle !== undefined) return idle;
    if (!this.listening)
      return {
        state: "ERROR",
        detail: `not listening for kill-switch changes: ${this.listenError ?? "not connected"}`,
      };
    if (this.readError !== undefined)
      return { state: "ERROR", detail: `kill-switch changes unread: ${this.readError}` };
    return { state: "OK", detail: `${this.clients.size} stream client(s), seq ${this.lastSeq}` };
  }

  get clientCount(): number {
    return this.clients.size;
  }

  get seq(): number {
    return this.lastSeq;
  }

  private get pingMs(): number {
    return this.opts.pingMs ?? 2000;
  }

  /**
   * Fresh: listening, every announced change read, and PostgreSQL heard from
   * within two ping intervals. Only then does a ping vouch for it.
   */
  private fresh(): boolean {
    return (
      this.listening &&
      this.readError === undefined &&
      this.lastSeq >= this.wantedSeq &&
      performance.now() - this.heardAt <= 2 * this.pingMs
    );
  }

  /** Reads the highest seq (one at a time, bounded by a ping interval); a newer one is read as announced. */
  private probe(): void {
    if (this.probing || this.stopped) return;
    this.probing = true;
    const asked = performance.now();
    let timer: NodeJS.Timeout | undefined;
    void Promise.race([
      this.opts.store.currentSeq(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("no answer in time")), this.pingMs);
        timer.unref();
      }),
    ])
      .then(
        (seq) => {
          this.heardAt = Math.max(this.heardAt, asked);
          if (seq > this.wantedSeq) this.announced(seq);
        },
        () => undefined, // not heard from: the pings stop once heardAt is old
      )
      .finally(() => {
        clearTimeout(timer);
        this.probing = false;
      });
  }

  // -- reading changes --------------------------------------------------------

  private announced(seq: number): void {
    if (seq > this.wantedSeq) this.wantedSeq = seq;
    this.read();
  }

  /** Reads changes up to the announced seq, one read at a time. */
  private read(): void {
    if (this.reading !== undefined || this.stopped) return;
    this.reading = this.readAll().finally(() => {
      this.reading = undefined;
      if (this.lastSeq < this.wantedSeq && this.readError === undefined) this.read();
    });
  }

  private async readAll(): Promise<void> {
    try {
      for (;;) {
        const changes = await this.opts.store.changesSince(this.lastSeq, 1000);
        for (const ch of changes) this.apply(ch);
        if (changes.length < 1000) break;
      }
      // a NOTIFY may name a seq whose row this read did not see yet; it is read then
      if (this.lastSeq > this.wantedSeq) this.wantedSeq = this.lastSeq;
      this.readError = undefined;
    } catch (e) {
      this.readError = normalizeError(e).message;
      this.opts.log.error("kill-switch changes could not be read; retrying", {
        event: "control.changes_read_failed",
        error: this.readError,
      });
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        this.readError = undefined;
        this.read();
      }, 500);
      this.retryTimer.unref();
    }
  }

  private apply(ch: SwitchChange): void {
    if (ch.seq <= this.lastSeq) return;
    this.lastSeq = ch.seq;
    this.ring.push(ch);
    if (this.ring.length > (this.opts.ringSize ?? 1000))
      this.trimmedSeq = this.ring.shift()?.seq ?? this.trimmedSeq;
    for (const c of this.clients) this.deliver(c, ch);
  }

  private deliver(c: Client, ch: SwitchChange): void {
    if (ch.seq <= c.cursor) return;
    c.cursor = ch.seq;
    if (!concerns(ch.switch, c.agentId)) return;
    this.send(c, "change", { seq: ch.seq, op: ch.op, switch: switchView(ch.switch) });
  }

  // -- clients ----------------------------------------------------------------

  /**
   * Serves one stream: the snapshot, then changes and pings until the client
   * leaves or is dropped. Resolves when the stream ends. Rejects (before
   * anything was written) when the snapshot cannot be read.
   */
  async serve(
    res: ServerResponse,
    agentId: string,
    instance: string | undefined,
    /** When the client's credential expires (epoch ms): the stream ends then, and it reconnects with a fresh one. */
    credentialExpiresAt?: number,
  ): Promise<void> {
    // counted before anything is read: a caller over its share costs no snapshot read
    const perAgent = this.opts.maxStreamsPerAgent ?? 1024;
    const total = this.opts.maxStreams ?? 10_000;
    const mine = this.held.get(agentId) ?? 0;
    if (mine >= perAgent || this.heldTotal >= total) {
      throw toolgateError(
        "fleet_stream_limit",
        mine >= perAgent
          ? `agent ${JSON.stringify(agentId)} holds ${mine} kill-switch streams on this replica, the most one agent may`
          : `this replica serves ${this.heldTotal} kill-switch streams, the most it may`,
        { retry_after: 1 },
      );
    }
    this.held.set(agentId, mine + 1);
    this.heldTotal += 1;
    try {
      await this.serveOne(res, agentId, instance, credentialExpiresAt);
    } finally {
      const left = (this.held.get(agentId) ?? 1) - 1;
      if (left > 0) this.held.set(agentId, left);
      else this.held.delete(agentId);
      this.heldTotal -= 1;
    }
  }

  private async serveOne(
    res: ServerResponse,
    agentId: string,
    instance: string | undefined,
    credentialExpiresAt: number | undefined,
  ): Promise<void> {
    const seq = await this.opts.store.currentSeq();
    const switches = (await this.opts.store.listActiveSwitches(this.now())).filter((s) =>
      concerns(s, agentId),
    );
    // the client may have left while the snapshot was read: nothing to serve
    if (res.destroyed || res.socket === null || res.socket.destroyed) return;
    res.statusCode = 200;
    res.setHeader("Content-Type", "text/event-stream; charset=utf-8");
    res.setHeader("Cache-Control", "no-store");
    res.setHeader("X-Accel-Buffering", "no");
    res.flushHeaders();
    res.socket?.setNoDelay(true);
    const c: Client = {
      res,
      agentId,
      instance,
      connectedAt: this.now(),
      cursor: seq,
      drainTimer: undefined,
      expiryTimer: undefined,
      closed: false,
    };
    return new Promise<void>((resolve) => {
      res.once("close", () => {
        this.drop(c, undefined);
        resolve();
      });
      if (this.stopped) {
        this.drop(c, undefined);
        return;
      }
      this.clients.add(c);
      this.opts.onClient?.(c, "connected");
      const left = credentialExpiresAt === undefined ? undefined : credentialExpiresAt - this.now();
      if (left !== undefined && left < 2 ** 31 - 1) {
        c.expiryTimer = setTimeout(
          () => this.drop(c, undefined, "its credential expired"),
          Math.max(0, left),
        );
        c.expiryTimer.unref();
      }
      this.send(c, "snapshot", { seq, switches: switches.map((s) => switchView(s)) });
      // changes this replica read after the snapshot's seq, before the client joined
      if (this.trimmedSeq > seq) {
        // the ring no longer reaches back to the snapshot: start over
        this.drop(c, "the stream fell behind; reconnect");
        return;
      }
      for (const ch of this.ring) this.deliver(c, ch);
      if (this.fresh())
        this.send(c, "ping", { seq: Math.max(c.cursor, seq), at: new Date().toISOString() });
    });
  }

  private ping(): void {
    this.probe();
    if (!this.fresh()) return;
    const at = new Date(this.now()).toISOString();
    for (const c of this.clients) {
      this.send(c, "ping", { seq: Math.max(c.cursor, this.lastSeq), at });
      this.opts.onClient?.(c, "seen");
    }
  }

  /** One SSE event; a client that does not drain is dropped. */
  private send(c: Client, event: string, data: unknown): void {
    if (c.closed) return;
    const max = this.opts.maxBufferedBytes ?? 256 * 1024;
    if (c.res.writableLength > max) {
      this.drop(c, `more than ${max} bytes queued`);
      return;
    }
    const ok = c.res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    if (!ok && c.drainTimer === undefined) {
      c.drainTimer = setTimeout(
        () => this.drop(c, "the client did not read its stream"),
        this.opts.drainTimeoutMs ?? 10_000,
      );
      c.drainTimer.unref();
      c.res.once("drain", () => {
        clearTimeout(c.drainTimer);
        c.drainTimer = undefined;
      });
    }
  }

  /**
   * Ends a client's stream: `why` (a fault: slow, behind) destroys it and is
   * logged; `ended` (its credential expired) ends it cleanly and is logged;
   * neither (it left, or the feed stops) just ends it.
   */
  private drop(c: Client, why: string | undefined, ended?: string): void {
    if (c.closed) return;
    c.closed = true;
    clearTimeout(c.drainTimer);
    clearTimeout(c.expiryTimer);
    const had = this.clients.delete(c);
    if (why !== undefined) {
      this.opts.log.warn("a stream client was dropped", {
        event: "control.stream_dropped",
        agent: c.agentId,
        instance: c.instance,
        why,
      });
      c.res.destroy();
    } else {
      if (ended !== undefined)
        this.opts.log.info("a stream was ended", {
          event: "control.stream_ended",
          agent: c.agentId,
          instance: c.instance,
          why: ended,
        });
      if (!c.res.writableEnded) c.res.end();
    }
    if (had) this.opts.onClient?.(c, "closed");
  }
}
