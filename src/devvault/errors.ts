/**
 * Key Vault's error responses, as the dev vault sends them. Every failure a Key Vault client can see is a
 * KvError: an HTTP status plus Key Vault's body `{"error":{"code","message","innererror"?:{"code"}}}`
 * (swagger definition KeyVaultError). Codes and messages copy what the real service returns where we
 * could find its wording (SDK recordings, issue threads, Microsoft's troubleshooting pages); where we
 * could not, the message follows the pattern of its nearest documented sibling and says so below.
 *
 * Messages never contain key material, plaintext or bearer tokens.
 */

/** Key Vault's JSON error body (swagger `KeyVaultError`). */
export interface KvErrorBody {
  readonly error: {
    readonly code: string;
    readonly message: string;
    readonly innererror?: { readonly code: string };
  };
}

/** A Key Vault error response: status, code, message, optional inner code and extra headers. */
export class KvError extends Error {
  override readonly name = 'KvError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly innerCode?: string,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
  }

  /** The response body Key Vault sends for this error. */
  body(): KvErrorBody {
    return {
      error: {
        code: this.code,
        message: this.message,
        ...(this.innerCode === undefined ? {} : { innererror: { code: this.innerCode } }),
      },
    };
  }
}

/** Key Vault's troubleshooting links, as its messages carry them. */
const NOT_FOUND_HELP =
  'For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182';
const POLICY_HELP =
  'For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287';

/** Builders for every error the dev vault returns, one per Key Vault condition. */
export const kvErrors = {
  /** 404 for a key name (or name/version) with no live key. Wording from Key Vault recordings. */
  keyNotFound(nameOrId: string): KvError {
    return new KvError(
      404,
      'KeyNotFound',
      `A key with (name/id) ${nameOrId} was not found in this key vault. If you recently deleted this key ` +
        `you may be able to recover it using the correct recovery command. ${NOT_FOUND_HELP}`,
    );
  },

  /** 404 from the /deletedkeys namespace (Key Vault says "Deleted Key not found"). */
  deletedKeyNotFound(): KvError {
    return new KvError(404, 'KeyNotFound', 'Deleted Key not found');
  },

  /** 403 for any crypto operation on a disabled key version (inner KeyDisabled). */
  keyDisabled(operation: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      `Operation ${operation} is not allowed on a disabled key.`,
      'KeyDisabled',
    );
  },

  /** 403 when the operation is not in the version's key_ops (inner KeyOperationForbidden). */
  keyOperationForbidden(operation: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      `Operation ${operation} is not permitted on this key.`,
      'KeyOperationForbidden',
    );
  },

  /**
   * 403 for encrypt/wrapKey before nbf. We found no recording of Key Vault's exact words for keys; this
   * follows its disabled-key and expired-secret messages ("Operation get is not allowed on a expired secret").
   */
  keyNotYetValid(operation: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      `Operation ${operation} is not allowed on a not yet valid key.`,
      'KeyNotYetValid',
    );
  },

  /** 403 for encrypt/wrapKey at or after exp; wording inferred as for keyNotYetValid. */
  keyExpired(operation: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      `Operation ${operation} is not allowed on an expired key.`,
      'KeyExpired',
    );
  },

  /**
   * 403 from the vault's access policy. The caller string has the shape Key Vault prints
   * ("appid=…;oid=…;iss=https://sts.windows.net/<tenant>/"), built from the identity's name.
   */
  forbiddenByPolicy(caller: string, permission: string, vaultName: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      `The user, group or application '${caller}' does not have keys ${permission} permission on key vault ` +
        `'${vaultName};location=local'. ${POLICY_HELP}`,
      'ForbiddenByPolicy',
    );
  },

  /** 409 when create/import names a soft-deleted key. Wording from Key Vault's secrets equivalent. */
  deletedButRecoverable(name: string): KvError {
    return new KvError(
      409,
      'Conflict',
      `Key ${name} is currently in a deleted but recoverable state, and its name cannot be reused; in this ` +
        'state, the key can only be recovered or purged.',
      'ObjectIsDeletedButRecoverable',
    );
  },

  /** 409 while a delete is still in progress (see DevVaultOptions.lroDelayMs). */
  beingDeleted(name: string): KvError {
    return new KvError(409, 'Conflict', `Key ${name} is currently being deleted.`, 'ObjectIsBeingDeleted');
  },

  /** 409 while a recovery is still in progress. */
  beingRecovered(name: string): KvError {
    return new KvError(
      409,
      'Conflict',
      `Key ${name} is currently being recovered.`,
      'ObjectIsBeingRecovered',
    );
  },

  /** 403 for purge while purge protection is on (the message the Azure CLI shows). */
  purgeProtected(): KvError {
    return new KvError(
      403,
      'Forbidden',
      'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault service ' +
        'will automatically purge it after the retention period has passed.',
    );
  },

  /** 400 for a malformed request. */
  badParameter(message: string): KvError {
    return new KvError(400, 'BadParameter', message);
  },

  /** 400 for an api-version other than the ones this vault speaks; Key Vault's own wording. */
  unsupportedApiVersion(given: string, latest: string): KvError {
    return new KvError(
      400,
      'BadParameter',
      `The specified version (${given}) is not recognized. Consider using the latest supported version (${latest}).`,
    );
  },

  /** 401 without (or with an unknown) bearer token; the caller adds the WWW-Authenticate challenge. */
  unauthorized(message: string, challenge: string): KvError {
    return new KvError(401, 'Unauthorized', message, undefined, { 'WWW-Authenticate': challenge });
  },

  /** 429 with Retry-After in whole seconds; message as Key Vault sends it. */
  throttled(retryAfterSeconds: number): KvError {
    return new KvError(
      429,
      'Throttled',
      'Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached',
      undefined,
      { 'Retry-After': String(retryAfterSeconds) },
    );
  },

  /** 404 for a path that is not a Key Vault keys operation. */
  notFound(): KvError {
    return new KvError(404, 'NotFound', 'The requested resource was not found on this dev vault.');
  },

  /** 405 for a known path with a method Key Vault does not serve there. */
  methodNotAllowed(method: string): KvError {
    return new KvError(405, 'MethodNotAllowed', `The method ${method} is not allowed on this resource.`);
  },

  /** 400 for a real Key Vault operation the dev vault does not implement (sign, backup, …). */
  notImplemented(operationId: string): KvError {
    return new KvError(
      400,
      'BadParameter',
      `Operation ${operationId} is not implemented by the sealbox dev vault.`,
    );
  },

  /** 500/503 injected by the fault controls, or an internal failure (details are logged, not sent). */
  serverError(status: 500 | 503): KvError {
    return status === 503
      ? new KvError(503, 'ServiceUnavailable', 'The service is temporarily unavailable. Please retry.')
      : new KvError(500, 'InternalServerError', 'An internal error occurred. Please retry.');
  },
} as const;
