import { withAuditCaller } from '../kek/audit';

type Handler = (call: { getPeer(): string }, ...rest: never[]) => void;

/**
 * Runs every handler with its method (and the call's peer) as the audit caller, so the KEK audit line
 * of any vault call a request triggers says which RPC it served. AsyncLocalStorage carries it through
 * all the async work the handler starts.
 */
export function withCallers<T extends object>(handlers: T, prefix = ''): T {
  const wrapped: Record<string, Handler> = {};
  for (const [method, handler] of Object.entries(handlers) as Array<[string, Handler]>) {
    wrapped[method] = (call, ...rest) =>
      withAuditCaller({ caller: `${prefix}${method}`, peer: call.getPeer() }, () => handler(call, ...rest));
  }
  return wrapped as T;
}
