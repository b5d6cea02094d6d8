/**
 * Fleet kill switches on the control service: a switch is committed to
 * PostgreSQL with its change row and NOTIFY in one transaction (the store),
 * then audited; every replica's stream carries it to its sidecars. Unlike a
 * sidecar's, a switch here may name any agent (or none: every agent).
 */
import { switchView, type KillSwitch, type NewKillSwitch } from "../containment";
import { newSwitchId, type SwitchScope } from "../containment/store";
import { toolgateError } from "../errors";
import type { FleetStore } from "./store/types";

export interface FleetSwitchesOptions {
  store: FleetStore;
  /** Containment events (killswitch.created / killswitch.deleted) for audit. */
  event: (event: string, fields: Record<string, unknown>) => void;
  now?: () => number;
}

export class FleetSwitches {
  private readonly now: () => number;

  constructor(private readonly opts: FleetSwitchesOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** A new switch (shape checked by schemas/kill-switch.schema.json); in force once this resolves. */
  async create(input: NewKillSwitch, by: string): Promise<KillSwitch> {
    const scope: SwitchScope = { ...input.scope };
    const now = this.now();
    let expiresAt: number | null = null;
    if (input.expires_at !== undefined && input.expires_at !== null) {
      const t = Date.parse(input.expires_at);
      if (!Number.isFinite(t))
        throw toolgateError("invalid_request", "expires_at must be an RFC 3339 date-time");
      if (t <= now) throw toolgateError("invalid_request", "expires_at must lie in the future");
      expiresAt = t;
    }
    const row = {
      id: newSwitchId(),
      scope,
      reason: input.reason,
      createdBy: by,
      createdAt: now,
      expiresAt,
      deletedAt: null,
      deletedBy: null,
    };
    const seq = await this.opts.store.createSwitch(row);
    const view = switchView(row);
    this.opts.event("killswitch.created", { killswitch: view, actor: by, seq });
    return view;
  }

  async delete(id: string, by: string): Promise<KillSwitch> {
    const r = await this.opts.store.deleteSwitch(id, by, this.now());
    if (r === undefined)
      throw toolgateError("killswitch_not_found", `no active kill switch ${JSON.stringify(id)}`);
    const view = switchView(r.row);
    this.opts.event("killswitch.deleted", { killswitch: view, actor: by, seq: r.seq });
    return view;
  }

  async list(): Promise<KillSwitch[]> {
    return (await this.opts.store.listActiveSwitches(this.now())).map((s) => switchView(s));
  }

  async history(limit: number): Promise<KillSwitch[]> {
    const n = Math.max(1, Math.min(1000, Math.trunc(limit) || 100));
    return (await this.opts.store.switchHistory(n)).map((s) => switchView(s));
  }
}
