import type { AuditCaller } from '../kek/audit';

/**
 * The audit caller of one RPC: its method (with `prefix`, e.g. "admin:"), the call's peer and the
 * identity access control admitted it as. Each handler builds one per call and passes it down to the
 * envelope service, the DEK cache and the KEK providers, so the audit line of any vault call a request
 * triggers says which RPC and identity it served (kek/audit.ts says why it is not AsyncLocalStorage).
 */
export function rpcCaller(
  method: string,
  call: { getPeer(): string },
  identity: string | undefined,
  prefix = '',
): AuditCaller {
  return { caller: `${prefix}${method}`, peer: call.getPeer(), identity };
}
