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
   * 403 with inner ForbiddenByPolicy and the access-policy wording: what this dev vault answered for a
   * missing permission before issue 13. Azure's access-policy answer is accessDenied; this one is only
   * sent as a forced answer (ForcedAnswers), for clients that must handle both. Inferred.
   */
  forbiddenByPolicy(caller: string, permission: string, vaultName: string): KvError {
    return policyRefusal(caller, permission, `${vaultName};location=local`, 'ForbiddenByPolicy');
  },

  /**
   * 403 from a vault's access policy, as Azure sends it: outer Forbidden, inner AccessDenied, the caller
   * string and "does not have keys <perm> permission on key vault '<name>;location=<region>'" (recorded in
   * turbot/steampipe-plugin-azure#127 and hashicorp/terraform-provider-azurerm#17015 for secrets).
   */
  accessDenied(caller: string, permission: string, vaultRef: string): KvError {
    return policyRefusal(caller, permission, vaultRef, 'AccessDenied');
  },

  /**
   * 403 from Azure RBAC on a vault (enableRbacAuthorization): outer Forbidden, inner ForbiddenByRbac, the
   * multi-line message with Caller, Action (the data action), Resource, Assignment and Vault (recorded in
   * piyushsachdeva/Terraform_AKS#2 and hashicorp/terraform-provider-azurerm#27817).
   */
  forbiddenByRbac(caller: string, action: string, resource: string, vaultRef: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      'Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or ' +
        'role definitions were changed recently, please observe propagation time.\r\n' +
        `Caller: ${caller}\r\nAction: '${action}'\r\nResource: '${resource}'\r\nAssignment: (not found)\r\n` +
        `DenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: ${vaultRef}\r\n`,
      'ForbiddenByRbac',
    );
  },

  /**
   * 403 from Managed HSM local RBAC. Recorded as "(AccessDenied) Not authorized to access
   * Microsoft.KeyVault/managedHsm/keys/create on '/keys'" (Azure CLI output quoted in
   * Azure/azure-cli#32719 and a Microsoft sample script): code AccessDenied; the activity id suffix is
   * Azure's, with a fresh GUID here.
   */
  managedHsmAccessDenied(action: string, scope: string, activityId: string): KvError {
    return new KvError(
      403,
      'AccessDenied',
      `Not authorized to access ${action} on '${scope}' (Activity ID: ${activityId})`,
    );
  },

  /**
   * 403 from a vault's firewall (network ACL default Deny, client address not listed), as recorded in
   * hashicorp/terraform-provider-azurerm#20742: inner ForbiddenByFirewall.
   */
  forbiddenByFirewall(clientAddress: string, caller: string, vaultRef: string): KvError {
    return new KvError(
      403,
      'Forbidden',
      'Client address is not authorized and caller is not a trusted service.\r\n' +
        `Client address: ${clientAddress}\r\nCaller: ${caller}\r\nVault: ${vaultRef}`,
      'ForbiddenByFirewall',
    );
  },

  /**
   * 403 when public network access is disabled: the message recorded in
   * Azure/secrets-store-csi-driver-provider-azure#873; the inner code ForbiddenByConnection is inferred
   * (named in sealbox issue 13, no recording found).
   */
  forbiddenByConnection(): KvError {
    return new KvError(
      403,
      'Forbidden',
      'Public network access is disabled and request is not from a trusted service nor via an approved private link.',
      'ForbiddenByConnection',
    );
  },

  /**
   * 400 for a key type the vault kind cannot hold: Azure's answer to kty oct on a vault, recorded in
   * Azure/azure-sdk-for-net#13437 and Azure/azure-sdk-for-js#26212 ("Invalid kty value: oct", inner
   * KeyTypeNotSupported).
   */
  keyTypeNotSupported(kty: string): KvError {
    return new KvError(400, 'BadParameter', `Invalid kty value: ${kty}`, 'KeyTypeNotSupported');
  },

  /**
   * 403 for an HSM key on a Standard vault: "Hardware key operation not allowed on standard vault"
   * (Azure/azure-sdk-for-net#6551, MicrosoftDocs/azure-docs#63888; the status is 403 per
   * MicrosoftDocs/azure-docs#34948). No inner code was recorded.
   */
  hardwareKeyOnStandard(): KvError {
    return new KvError(403, 'Forbidden', 'Hardware key operation not allowed on standard vault');
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

/** An access policy's 403: Azure's wording, with the inner code `inner`. */
function policyRefusal(caller: string, permission: string, vaultRef: string, inner: string): KvError {
  return new KvError(
    403,
    'Forbidden',
    `The user, group or application '${caller}' does not have keys ${permission} permission on key vault ` +
      `'${vaultRef}'. ${POLICY_HELP}`,
    inner,
  );
}
