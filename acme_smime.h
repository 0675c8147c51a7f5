/*
 * acme_smime.h -- ACME for S/MIME (RFC 8823 over RFC 8555) for embedded devices.
 *
 * One header, one source file (acme_smime.c). Link with BearSSL; jsmn is
 * included from the system by the source file. The library never allocates:
 * every structure below is owned by the caller, every output goes into a
 * buffer the caller passes together with its size.
 *
 * This header is the whole public API. It is laid out as:
 *
 *   1. compile-time limits (override any of them with -D or before including)
 *   2. result and error codes
 *   3. keys: generation, JWK thumbprint
 *   4. RFC 8823 helpers for callers with their own mailbox code:
 *      the digest, the challenge-mail check, the response-mail writer
 *   5. ACME building blocks for callers with their own HTTP transport:
 *      the signed request body (JWS), the CSR, the newOrder payload,
 *      the email-reply-00 challenge of an authorization
 *   6. the client: ports (caller hooks), configuration, the context, the
 *      resumable engine (acme_smime_step) and its blocking driver
 *
 * All functions are reentrant and keep no global state. Strings are
 * NUL-terminated ASCII unless a length is passed next to them.
 */
#ifndef ACME_SMIME_H
#define ACME_SMIME_H

#include <stddef.h>
#include <stdint.h>

#include <bearssl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * 1. Compile-time limits
 *
 * Each limit bounds a fixed field or a scan; input longer than a limit is
 * refused with a clear error, never truncated.
 * ---------------------------------------------------------------------- */

/* Longest URL accepted from the server (directory, order, challenge...). */
#ifndef ACME_SMIME_MAX_URL
#define ACME_SMIME_MAX_URL 256
#endif

/* Longest mailbox address (RFC 5321 path limit is 256 including <>). */
#ifndef ACME_SMIME_MAX_ADDR
#define ACME_SMIME_MAX_ADDR 254
#endif

/* Longest token part (base64url characters) taken from a Subject or from a
 * challenge object. 128 characters carry 768 bits, far above the 128-bit
 * minimum of RFC 8823. */
#ifndef ACME_SMIME_MAX_TOKEN
#define ACME_SMIME_MAX_TOKEN 128
#endif

/* Longest header field value we unfold and examine (Subject, From, To,
 * Reply-To, Auto-Submitted, Message-ID, References). Other fields are
 * skipped without being copied. */
#ifndef ACME_SMIME_MAX_HEADER
#define ACME_SMIME_MAX_HEADER 1024
#endif

/* Longest Message-ID kept for In-Reply-To, and References kept for the
 * response's References field. */
#ifndef ACME_SMIME_MAX_MSGID
#define ACME_SMIME_MAX_MSGID 250
#endif
#ifndef ACME_SMIME_MAX_REFERENCES
#define ACME_SMIME_MAX_REFERENCES 500
#endif

/* Longest message id of a caller's mailbox hook (POP3 UIDL allows 70). */
#ifndef ACME_SMIME_MAX_MAIL_ID
#define ACME_SMIME_MAX_MAIL_ID 70
#endif

/* Reply-To addresses kept from a challenge mail (the response goes to all). */
#ifndef ACME_SMIME_MAX_REPLY_TO
#define ACME_SMIME_MAX_REPLY_TO 4
#endif

/* Longest DNS TXT record (a DKIM key) the dns_txt hook may return: a
 * 4096-bit RSA key record is about 800 characters. */
#ifndef ACME_SMIME_MAX_DNS_TXT
#define ACME_SMIME_MAX_DNS_TXT 1024
#endif

/* JSON tokens available to parse one server object (each costs 20 bytes). */
#ifndef ACME_SMIME_JSON_TOKENS
#define ACME_SMIME_JSON_TOKENS 96
#endif

/* Deepest JSON nesting accepted (ACME objects nest 3 levels at most). */
#ifndef ACME_SMIME_JSON_MAX_DEPTH
#define ACME_SMIME_JSON_MAX_DEPTH 8
#endif

/* ------------------------------------------------------------------------
 * 2. Result and error codes
 *
 * Functions return a non-negative value (often a length) on success and one
 * of these negative codes on failure. acme_smime_strerror() names them.
 * ---------------------------------------------------------------------- */

#define ACME_SMIME_OK 0
#define ACME_SMIME_ERR_INVALID   (-1)  /* an argument is malformed or missing */
#define ACME_SMIME_ERR_BUFFER    (-2)  /* an output buffer is too small */
#define ACME_SMIME_ERR_LIMIT     (-3)  /* input exceeds a compile-time limit */
#define ACME_SMIME_ERR_ENCODING  (-4)  /* bad base64/base64url input */
#define ACME_SMIME_ERR_JSON      (-5)  /* malformed JSON */
#define ACME_SMIME_ERR_CRYPTO    (-6)  /* key generation or signing failed */
#define ACME_SMIME_ERR_ENTROPY   (-7)  /* the entropy hook failed */
#define ACME_SMIME_ERR_UNSUPPORTED (-8) /* key type or feature not built in */
#define ACME_SMIME_ERR_MAIL      (-9)  /* challenge mail refused (see reason) */

/* A one-line English description of a code above; never NULL. */
const char *acme_smime_strerror(int code);

/* ------------------------------------------------------------------------
 * 3. Keys
 *
 * Keys are plain caller-owned structures. The private part is secret: the
 * library never logs it and wipes its own copies; call acme_smime_key_wipe()
 * when you are done with one.
 * ---------------------------------------------------------------------- */

#define ACME_SMIME_KEY_P256 1   /* ECDSA P-256, JWS alg ES256 (default) */
#define ACME_SMIME_KEY_P384 2   /* ECDSA P-384, JWS alg ES384 */

typedef struct acme_smime_key {
	int type;                   /* ACME_SMIME_KEY_*; 0 = no key */
	size_t priv_len;            /* 32 (P-256) or 48 (P-384) */
	unsigned char priv[48];     /* big-endian private scalar */
	size_t pub_len;             /* 65 or 97 */
	unsigned char pub[97];      /* uncompressed point 0x04 || X || Y */
} acme_smime_key;

/* Entropy source: fill buf with len unpredictable bytes; return 0 on
 * success, non-zero on failure. user is passed back unchanged. */
typedef int (*acme_smime_entropy_fn)(void *user, unsigned char *buf, size_t len);

/* Generate a fresh key of the given type. 48 bytes of entropy seed an
 * HMAC-DRBG (SHA-256) from which BearSSL draws the scalar; the seed and the
 * DRBG state are wiped before return. Returns ACME_SMIME_OK or an error. */
int acme_smime_key_generate(acme_smime_key *key, int type,
	acme_smime_entropy_fn entropy, void *entropy_user);

/* Load a key from its private scalar (big-endian, priv_len bytes) and
 * compute the public point. Returns ACME_SMIME_OK or an error. */
int acme_smime_key_from_private(acme_smime_key *key, int type,
	const unsigned char *priv, size_t priv_len);

/* Overwrite the whole structure with zeros. */
void acme_smime_key_wipe(acme_smime_key *key);

/* RFC 7638 JWK thumbprint (SHA-256, base64url, 43 characters + NUL) of the
 * key's public part: the value that ends every RFC 8555 key authorization.
 * out must hold ACME_SMIME_THUMBPRINT_SIZE bytes. */
#define ACME_SMIME_THUMBPRINT_SIZE 44
int acme_smime_jwk_thumbprint(const acme_smime_key *key,
	char out[ACME_SMIME_THUMBPRINT_SIZE]);

/* ------------------------------------------------------------------------
 * 4. RFC 8823 helpers
 *
 * For a caller who fetches and sends mail with its own code. The flow is:
 *
 *   acme_smime_check_challenge_mail()  -- is this mail our challenge?
 *   acme_smime_rfc8823_digest()        -- token-part1 + token-part2 + key
 *   acme_smime_write_response_mail()   -- the reply to submit over SMTP
 *
 * and only then the POST of {} to the challenge URL (RFC 8823 section 3).
 * ---------------------------------------------------------------------- */

/* How token-part1 and token-part2 are joined (RFC 8823 is ambiguous):
 * STRING joins the texts, part1 exactly as received (acme4j, Pebble's
 * RFC 8823 branch, acme2certifier); BYTES decodes both parts, joins the
 * bytes and re-encodes (acmez, CASTLE's own client). */
#define ACME_SMIME_CONCAT_STRING 0
#define ACME_SMIME_CONCAT_BYTES  1

/* The digest that goes into the response mail:
 * base64url(SHA-256(token || "." || thumbprint)), 43 characters + NUL.
 * Whitespace inside part1 is ignored; '=' padding in either part is
 * accepted (kept verbatim in STRING mode). */
#define ACME_SMIME_DIGEST_SIZE 44
int acme_smime_rfc8823_digest(const char *token_part1, const char *token_part2,
	const char *thumbprint, int concat_mode, char out[ACME_SMIME_DIGEST_SIZE]);

/* Challenge-mail policy flags. The default (0) is strict: every check of
 * RFC 8823 section 3.1 applies, including authenticity: one of three
 * proofs must hold (protocol.md 16.2), tried in this order:
 *
 *   S/MIME  a multipart/signed or pkcs7-mime signed-data signature whose
 *           signer chains to smime_anchors at time now, whose certificate
 *           names the From address (rfc822Name), and whose protected From,
 *           To and Subject (an inner message/rfc822 or the RFC 7508
 *           attribute) equal the outer ones;
 *   DKIM    an rsa-sha256 DKIM-Signature with d= the From domain, h=
 *           covering From, To, Subject, Date, Message-ID and
 *           Auto-Submitted, the key fetched through dns_txt;
 *   A-R     the topmost Authentication-Results field, from authserv_id,
 *           reporting dkim=pass with header.d= the From domain.
 *
 * The relaxed flags exist for CAs that do not sign or do not set
 * Auto-Submitted (Pebble's RFC 8823 branch, acme2certifier). Using them
 * weakens the protection against forged challenges: the verdict's relaxed
 * field says which one let a mail through, log it every time.
 * ALLOW_NO_AUTOSUBMIT tolerates a missing Auto-Submitted field only (and
 * its absence from a DKIM h=); an explicit value other than
 * auto-generated (RFC 3834 "no": a human wrote it) is refused in every
 * mode. RELAXED_HEADER_PROTECTION takes From, To and Subject from the
 * S/MIME protected headers, in place of the outer ones, when they differ
 * (acme4j's non-strict mode); strict refuses such a mail. */
#define ACME_SMIME_MAIL_ALLOW_UNSIGNED            0x01u
#define ACME_SMIME_MAIL_ALLOW_NO_AUTOSUBMIT       0x02u
#define ACME_SMIME_MAIL_RELAXED_HEADER_PROTECTION 0x04u

/* DKIM key lookup: the TXT record at name ("sel._domainkey.example.com",
 * no trailing dot). Write its text (the record's character-strings joined,
 * NUL-terminated) into out and return its length; return 0 when the name
 * has no TXT record, a negative value when the lookup failed. When there
 * are several records, return the first. out_size is
 * ACME_SMIME_MAX_DNS_TXT + 1. The answer must come from a resolver the
 * device trusts (DNSSEC is not checked). */
typedef int (*acme_smime_dns_txt_fn)(void *user, const char *name,
	char *out, size_t out_size);

/* Bytes of smime_work that hold the decoded signature of a typical
 * detached S/MIME mail (a signer and two CA certificates); a pkcs7-mime
 * mail also needs the size of its content. */
#define ACME_SMIME_SMIME_WORK_SIZE 8192

/* What the caller knows of the pending challenge, and what it trusts.
 * Members it leaves zero or NULL disable the proof that needs them. */
typedef struct acme_smime_pending {
	const char *identifier;  /* our mailbox, the "email" identifier */
	const char *from;        /* the challenge object's "from" */
	unsigned policy;         /* ACME_SMIME_MAIL_* flags */

	/* Unix seconds, for certificate validity and DKIM x=. 0 = unknown:
	 * an S/MIME signature is then refused (ACME_SMIME_MAIL_NO_TIME),
	 * never judged without the time (protocol.md 16.3). */
	uint64_t now;
	/* S/MIME: the CAs that issue the CA's signing certificates
	 * (acme_smime_trust_anchors_from_pem() builds them), and scratch for
	 * the decoded CMS (ACME_SMIME_SMIME_WORK_SIZE bytes suffice for a
	 * detached signature). */
	const br_x509_trust_anchor *smime_anchors;
	size_t smime_anchor_count;
	unsigned char *smime_work;
	size_t smime_work_size;
	/* DKIM: the TXT lookup (the POSIX port's acme_smime_posix_dns_txt
	 * asks a configured resolver), and its user pointer. */
	acme_smime_dns_txt_fn dns_txt;
	void *dns_user;
	/* The authserv-id of our own receiving server, whose topmost
	 * Authentication-Results field is trusted (it must strip forged
	 * ones, RFC 8601 section 5); NULL trusts none. */
	const char *authserv_id;
	/* Unix seconds when the order began (0: no check): a mail whose Date
	 * is more than 10 minutes older is a late mail of an earlier order
	 * (ACME_SMIME_MAIL_STALE). */
	uint64_t not_before;
} acme_smime_pending;

/* Why a mail was refused (ACME_SMIME_MAIL_OK when it was accepted). When
 * no proof holds, the reason is the first proof's the mail carried
 * (S/MIME, DKIM, Authentication-Results), or UNSIGNED when it carried
 * none. Within S/MIME and within DKIM the reasons are in check order. */
enum acme_smime_mail_reason {
	ACME_SMIME_MAIL_OK = 0,
	ACME_SMIME_MAIL_MALFORMED,        /* no header field, a line without a
	                                     colon, a NUL or bare CR in the
	                                     header (an empty mail too) */
	ACME_SMIME_MAIL_HEADER_TOO_LONG,  /* a field exceeds ACME_SMIME_MAX_HEADER */
	ACME_SMIME_MAIL_NO_SUBJECT,
	ACME_SMIME_MAIL_DUPLICATE_FIELD,  /* two From, To, Subject, ... fields */
	ACME_SMIME_MAIL_BAD_ENCODED_WORD, /* broken RFC 2047 encoded-word */
	ACME_SMIME_MAIL_BAD_CHARSET,      /* encoded-word not UTF-8/US-ASCII */
	ACME_SMIME_MAIL_REPLY_SUBJECT,    /* Re:/Fwd: -- never answer replies */
	ACME_SMIME_MAIL_NOT_ACME_SUBJECT, /* Subject does not start "ACME:" */
	ACME_SMIME_MAIL_BAD_TOKEN,        /* token-part1 not base64url */
	ACME_SMIME_MAIL_SHORT_TOKEN,      /* token-part1 under 128 bits */
	ACME_SMIME_MAIL_LONG_TOKEN,       /* over ACME_SMIME_MAX_TOKEN */
	ACME_SMIME_MAIL_NO_FROM,
	ACME_SMIME_MAIL_BAD_FROM,         /* From is not exactly one mailbox */
	ACME_SMIME_MAIL_FROM_MISMATCH,    /* From != challenge "from" */
	ACME_SMIME_MAIL_NO_TO,
	ACME_SMIME_MAIL_BAD_TO,           /* To cannot be parsed */
	ACME_SMIME_MAIL_TO_MISMATCH,      /* To lacks our identifier */
	ACME_SMIME_MAIL_NO_AUTO_SUBMITTED,
	ACME_SMIME_MAIL_NOT_AUTO_GENERATED,
	ACME_SMIME_MAIL_BAD_REPLY_TO,     /* unparsable, too many, or an address
	                                     a 7-bit reply cannot carry */
	ACME_SMIME_MAIL_UNSIGNED,         /* no S/MIME, no DKIM-Signature, no
	                                     trusted Authentication-Results */
	ACME_SMIME_MAIL_BAD_ARGUMENT,     /* the pending challenge is incomplete */
	ACME_SMIME_MAIL_NO_TIME,          /* S/MIME signed, pending.now is 0 */
	ACME_SMIME_MAIL_SMIME_MALFORMED,  /* MIME structure or CMS broken, BER
	                                     indefinite lengths included */
	ACME_SMIME_MAIL_SMIME_LIMIT,      /* the CMS does not fit smime_work */
	ACME_SMIME_MAIL_SMIME_UNSUPPORTED, /* digest/signature/key algorithm */
	ACME_SMIME_MAIL_SMIME_DIGEST_MISMATCH, /* message-digest != content */
	ACME_SMIME_MAIL_SMIME_BAD_SIGNATURE,
	ACME_SMIME_MAIL_SMIME_UNTRUSTED,  /* signer certificate missing, expired,
	                                     not allowed to sign mail, or not
	                                     chaining to smime_anchors */
	ACME_SMIME_MAIL_SMIME_NO_SAN,     /* signer has no rfc822Name */
	ACME_SMIME_MAIL_SMIME_SIGNER_MISMATCH, /* no rfc822Name is From */
	ACME_SMIME_MAIL_SMIME_NO_HEADER_PROTECTION,
	ACME_SMIME_MAIL_SMIME_HEADER_MISMATCH, /* protected != outer (strict) */
	ACME_SMIME_MAIL_DKIM_MALFORMED,   /* syntax, v=, tag missing or repeated */
	ACME_SMIME_MAIL_DKIM_ALGORITHM,   /* not rsa-sha256 (rsa-sha1 refused) */
	ACME_SMIME_MAIL_DKIM_ED25519,     /* ed25519-sha256: not supported */
	ACME_SMIME_MAIL_DKIM_LENGTH_TAG,  /* l= is refused */
	ACME_SMIME_MAIL_DKIM_DOMAIN_MISMATCH, /* d= != From domain */
	ACME_SMIME_MAIL_DKIM_HEADERS_UNSIGNED, /* h= lacks a required field */
	ACME_SMIME_MAIL_DKIM_EXPIRED,     /* x= is past (when now is known) */
	ACME_SMIME_MAIL_DKIM_BODY_HASH,   /* bh= does not match */
	ACME_SMIME_MAIL_DKIM_KEY_UNAVAILABLE, /* lookup failed, no record, or
	                                     no dns_txt hook */
	ACME_SMIME_MAIL_DKIM_BAD_KEY,     /* revoked, t=y, not RSA, < 1024 bits */
	ACME_SMIME_MAIL_DKIM_BAD_SIGNATURE,
	ACME_SMIME_MAIL_AR_UNTRUSTED,     /* topmost A-R not from authserv_id */
	ACME_SMIME_MAIL_AR_NO_PASS,       /* no dkim=pass for the From domain */
	ACME_SMIME_MAIL_STALE,            /* Date well before pending.not_before */
	ACME_SMIME_MAIL_REASON_COUNT
};

/* Which proof established authenticity. */
#define ACME_SMIME_PROOF_NONE         0  /* ACME_SMIME_MAIL_ALLOW_UNSIGNED */
#define ACME_SMIME_PROOF_SMIME        1
#define ACME_SMIME_PROOF_DKIM         2
#define ACME_SMIME_PROOF_AUTH_RESULTS 3

/* The result of a check. On acceptance the fields hold what the response
 * needs; on refusal reason says why and the other fields are unspecified. */
typedef struct acme_smime_mail_verdict {
	int reason;                                   /* acme_smime_mail_reason */
	char token_part1[ACME_SMIME_MAX_TOKEN + 1];   /* whitespace removed */
	/* Where the response goes: the Reply-To addresses, else the From. */
	unsigned reply_count;
	char reply_to[ACME_SMIME_MAX_REPLY_TO][ACME_SMIME_MAX_ADDR + 1];
	char message_id[ACME_SMIME_MAX_MSGID + 1];    /* "<...>" or "" */
	char references[ACME_SMIME_MAX_REFERENCES + 1]; /* raw, or "" */
	int proof;                                    /* ACME_SMIME_PROOF_* */
	unsigned relaxed;      /* the ACME_SMIME_MAIL_* flags that let this
	                          mail through: warn about each */
} acme_smime_mail_verdict;

/* Check a raw challenge mail (RFC 5322 text, CRLF or LF line ends; the body
 * may be absent) against the pending challenge. Fills *verdict and returns
 * ACME_SMIME_OK when the mail may be answered, ACME_SMIME_ERR_MAIL when it
 * must be ignored (verdict->reason says why), ACME_SMIME_ERR_INVALID when an
 * argument is NULL. The mail is only read. */
int acme_smime_check_challenge_mail(const char *mail, size_t mail_len,
	const acme_smime_pending *pending, acme_smime_mail_verdict *verdict);

/* A one-line English text for a refusal reason; never NULL. */
const char *acme_smime_mail_reason_text(int reason);

/* The response mail (RFC 8823 section 3.2). */
typedef struct acme_smime_response {
	const char *from;             /* our identifier (addr-spec) */
	const acme_smime_mail_verdict *challenge; /* from the accepted check */
	const char *digest;           /* 43 characters, from the digest helper */
	const char *message_id;       /* ours, "<unique@domain>", or NULL */
	uint64_t date;                /* Unix seconds; 0 = no Date field */
} acme_smime_response;

/* Write the response mail into out (CRLF line ends, 7bit text/plain, the
 * digest on one line between the RFC 8823 delimiter lines). It is NUL
 * terminated; the return value is its length without the NUL, or
 * ACME_SMIME_ERR_BUFFER when out is too small (nothing useful is left in
 * out then), or ACME_SMIME_ERR_INVALID for a bad field. SMTP dot-stuffing is
 * the transport's job and is not applied here.
 *
 * From is written as <addr> (Pebble's RFC 8823 branch refuses a bare
 * address) and so is each To address; the To and References lines fold at
 * 78 characters between items. from must be a plain dot-atom address with
 * one '@'; message_id must look like <...> (printable, no spaces); date at
 * most 253402300799 (31 Dec 9999). ACME_SMIME_RESPONSE_MAIL_MAX bytes
 * always suffice (3524 with the default limits; a typical reply is about
 * 510). */
int acme_smime_write_response_mail(char *out, size_t out_size,
	const acme_smime_response *response);

/* Largest response mail, NUL included. */
#define ACME_SMIME_RESPONSE_MAIL_MAX (352 + ACME_SMIME_MAX_ADDR \
	+ ACME_SMIME_MAX_REPLY_TO * (ACME_SMIME_MAX_ADDR + 6) \
	+ ACME_SMIME_MAX_TOKEN + 3 * ACME_SMIME_MAX_MSGID \
	+ 2 * ACME_SMIME_MAX_REFERENCES)

/* ------------------------------------------------------------------------
 * 5. ACME building blocks
 *
 * The pieces of RFC 8555 that need no network, for a caller who moves the
 * bytes with its own HTTP client. Each writes into a caller buffer and
 * returns the length written (the text is NUL-terminated), or an error.
 * ---------------------------------------------------------------------- */

/* Identifier types of an order. */
#define ACME_SMIME_ID_EMAIL 1   /* RFC 8823 "email": rfc822Name in the CSR */
#define ACME_SMIME_ID_DNS   2   /* RFC 8555 "dns": dNSName in the CSR */

typedef struct acme_smime_identifier {
	int type;                /* ACME_SMIME_ID_* */
	const char *value;       /* ASCII address or host name */
} acme_smime_identifier;

/* Most identifiers in one order and one CSR. */
#ifndef ACME_SMIME_MAX_IDENTIFIERS
#define ACME_SMIME_MAX_IDENTIFIERS 10
#endif

/* The signed body of an ACME POST (RFC 8555 section 6.2): a flattened JWS
 * with alg ES256 (P-256 key) or ES384 (P-384), the server's nonce, the
 * exact request URL and either kid (the account URL) or, when kid is NULL,
 * the account's public JWK (newAccount only). payload is JSON text; pass
 * "" for POST-as-GET and "{}" to answer a challenge. The signature is
 * verified before return (a fault during signing would leak the key). */
int acme_smime_jws_sign(char *out, size_t out_size, const acme_smime_key *key,
	const char *nonce, const char *url, const char *kid,
	const char *payload, size_t payload_len);

/* Key-usage profiles of the CSR (RFC 8823 section 3.3). For EC keys
 * encryption means keyAgreement, never keyEncipherment. */
#define ACME_SMIME_KU_DUAL    0  /* digitalSignature + keyAgreement */
#define ACME_SMIME_KU_SIGN    1  /* digitalSignature */
#define ACME_SMIME_KU_ENCRYPT 2  /* keyAgreement */
#define ACME_SMIME_KU_NONE    3  /* no keyUsage extension: CA decides */

/* A PKCS#10 certificate request in DER, signed by key (which must not be
 * the account key): subject CN = the first identifier when it fits the
 * 64-character X.520 bound (else an empty subject), one subjectAltName
 * entry per identifier (rfc822Name for email, dNSName for dns) and the
 * keyUsage of the profile, critical. No other extension: some CAs refuse
 * any. Returns the DER length. 512 bytes hold one identifier. */
int acme_smime_csr_write(unsigned char *out, size_t out_size,
	const acme_smime_key *key, const acme_smime_identifier *ids,
	size_t id_count, int ku_profile);

/* The newOrder payload {"identifiers":[{"type":"email","value":...},...]}. */
int acme_smime_order_payload(char *out, size_t out_size,
	const acme_smime_identifier *ids, size_t id_count);

/* The challenge of an authorization object that a client acts on. */
typedef struct acme_smime_challenge {
	char status[16];                      /* "pending", "valid", ... */
	char url[ACME_SMIME_MAX_URL + 1];
	char token[ACME_SMIME_MAX_TOKEN + 1]; /* token-part2 for email-reply-00 */
	char from[ACME_SMIME_MAX_ADDR + 1];   /* email-reply-00 only */
} acme_smime_challenge;

/* Find the challenge of the given type (e.g. "email-reply-00") in an
 * authorization object (RFC 8555 section 7.1.4) and copy its fields, with
 * JSON escapes decoded. An email-reply-00 challenge without "from" or
 * "token" is refused. Returns ACME_SMIME_OK, ACME_SMIME_ERR_JSON (malformed
 * or no such challenge) or ACME_SMIME_ERR_LIMIT (a field or the token
 * count is over its limit). Uses ACME_SMIME_JSON_TOKENS tokens of stack
 * (20 bytes each). */
int acme_smime_parse_authorization(const char *json, size_t json_len,
	const char *type, acme_smime_challenge *challenge);

/* ------------------------------------------------------------------------
 * 6. The client
 *
 * One caller-allocated context runs one enrollment. The engine never
 * blocks: acme_smime_step() does as much as it can and says what it waits
 * for (BearSSL's engine is the model). All I/O goes through the ports.
 * ---------------------------------------------------------------------- */

/* Size of the caller's work buffer: the TLS record buffer (half duplex,
 * BR_SSL_BUFSIZE_MONO) plus the HTTP area where a request is built and a
 * response body lands. ACME objects are small; the certificate chain is
 * the largest body the client reads. */
#ifndef ACME_SMIME_HTTP_AREA
#define ACME_SMIME_HTTP_AREA 8192
#endif
/* The TLS part, rounded up to 8 so that the HTTP area behind it is
 * aligned for the JSON tokens placed in it (BR_SSL_BUFSIZE_MONO is odd). */
#define ACME_SMIME_TLS_AREA ((BR_SSL_BUFSIZE_MONO + 7) / 8 * 8)
#define ACME_SMIME_WORKBUF_SIZE (ACME_SMIME_TLS_AREA + ACME_SMIME_HTTP_AREA)

/* Longest HTTP response header line kept while parsing (longer lines of
 * headers we need are an error, others are skipped). */
#ifndef ACME_SMIME_MAX_HEADER_LINE
#define ACME_SMIME_MAX_HEADER_LINE 512
#endif

/* Longest Replay-Nonce accepted. */
#ifndef ACME_SMIME_MAX_NONCE
#define ACME_SMIME_MAX_NONCE 128
#endif

/* badNonce answers retried in a row for one request (each costs one
 * request and no wait; servers may reject any share of nonces). */
#ifndef ACME_SMIME_MAX_BAD_NONCE
#define ACME_SMIME_MAX_BAD_NONCE 16
#endif

/* Mailbox bookkeeping (4 bytes per entry). The snapshot keeps the ids
 * of the last ACME_SMIME_MAX_SNAPSHOT messages present before the order;
 * in a larger mailbox every message listed before one of them is old too
 * (mailboxes list in arrival order), so the size of the mailbox is not
 * bounded. ACME_SMIME_MAX_EXAMINED new messages are looked at per poll,
 * and the last ACME_SMIME_MAX_EXAMINED_KEPT looked at and refused are
 * not read again (the next poll goes on after the last one). */
#ifndef ACME_SMIME_MAX_SNAPSHOT
#define ACME_SMIME_MAX_SNAPSHOT 64
#endif
#ifndef ACME_SMIME_MAX_EXAMINED
#define ACME_SMIME_MAX_EXAMINED 8
#endif
#ifndef ACME_SMIME_MAX_EXAMINED_KEPT
#define ACME_SMIME_MAX_EXAMINED_KEPT 32
#endif

/* Authorizations tracked per order (one per identifier). */
#ifndef ACME_SMIME_MAX_AUTHZ
#define ACME_SMIME_MAX_AUTHZ 4
#endif

/* Results of acme_smime_step() besides the negative error codes. */
#define ACME_SMIME_DONE      1  /* certificate stored, or nothing to do */
#define ACME_SMIME_WANT_IO   2  /* wait for the socket, see acme_smime_io() */
#define ACME_SMIME_WANT_TIME 3  /* wait until acme_smime_wake_ms() */
#define ACME_SMIME_AGAIN     4  /* progress made: call again at once */

/* Error codes of the engine (besides those of section 2). */
#define ACME_SMIME_ERR_NET     (-20)  /* connect/send/recv failed, peer closed */
#define ACME_SMIME_ERR_TLS     (-21)  /* handshake or record layer failed */
#define ACME_SMIME_ERR_HTTP    (-22)  /* malformed or unexpected HTTP */
#define ACME_SMIME_ERR_ACME    (-23)  /* the server sent a problem document */
#define ACME_SMIME_ERR_TIME    (-24)  /* the clock is unknown */
#define ACME_SMIME_ERR_TIMEOUT (-25)  /* a wait or retry bound ran out */
#define ACME_SMIME_ERR_STORE   (-26)  /* flash read/program/erase failed */
#define ACME_SMIME_ERR_STATE   (-27)  /* order/authorization went invalid */
#define ACME_SMIME_ERR_HOOK    (-28)  /* a caller hook reported failure */

/* Values a recv hook returns besides a byte count. */
#define ACME_SMIME_NET_WOULD_BLOCK 0
#define ACME_SMIME_NET_CLOSED      (-1)  /* orderly close by the peer */
#define ACME_SMIME_NET_ERROR       (-2)

/* I/O readiness the engine waits for. */
#define ACME_SMIME_IO_READ  1
#define ACME_SMIME_IO_WRITE 2

/* Log levels. */
#define ACME_SMIME_LOG_ERROR 0
#define ACME_SMIME_LOG_WARN  1
#define ACME_SMIME_LOG_INFO  2
#define ACME_SMIME_LOG_DEBUG 3

/*
 * Flash, as the store sees it: NOR semantics. erase(addr) sets the sector
 * that starts at addr to 0xFF; program() can only clear bits and is given
 * whole program units (addr and len multiples of program_unit); read()
 * may read any range. Each returns 0 on success, negative on failure. The
 * store writes every record twice over (A/B slots, sequence number, CRC),
 * so a power cut at any instant leaves the previous copy readable. The
 * store uses the first ACME_SMIME_STORE_SIZE(sector_size, program_unit)
 * bytes (48 KiB with 4 KiB sectors) and never passes a program call that
 * crosses a 256-byte boundary.
 */
typedef struct acme_smime_flash {
	void *user;
	int (*read)(void *user, uint32_t addr, unsigned char *buf, size_t len);
	int (*program)(void *user, uint32_t addr, const unsigned char *buf,
		size_t len);
	int (*erase)(void *user, uint32_t addr);
	uint32_t size;           /* bytes, a multiple of sector_size */
	uint32_t sector_size;    /* erase unit, a power of two >= 256 */
	uint32_t program_unit;   /* 1, 2, 4, 8, 16, 32, 64, 128 or 256 */
} acme_smime_flash;

/*
 * A caller's own mailbox, in place of the built-in POP3 and SMTP clients
 * (acme_smime_ports.mailbox): for a device whose mail already goes
 * through its own code (IMAP, a local maildir, a modem's mail service).
 * The engine keeps every RFC 8823 rule: the snapshot of the mailbox
 * before newOrder (in flash), the checks of the challenge mail, the
 * record "answered" before the reply is handed over, the grace period.
 *
 * Messages are named by ids of the caller's choosing, 1 to
 * ACME_SMIME_MAX_MAIL_ID bytes, that do not change while the message
 * exists (a POP3 UIDL, an IMAP UIDVALIDITY and UID, a file name).
 *
 * Each hook returns 0 when done, 1 when not yet (the engine calls it
 * again a second later: a hook may start a slow operation and report
 * its end), or a negative value on failure (the enrollment stops with a
 * retryable ACME_SMIME_ERR_HOOK).
 */
typedef void (*acme_smime_mail_entry_fn)(void *arg, const char *id, size_t id_len,
	size_t size);

typedef struct acme_smime_mailbox {
	/* Call entry(arg, id, id_len, size) for every message in the
	 * mailbox, oldest first; size in bytes, 0 when unknown. Called once
	 * for the snapshot and at every poll for the challenge. An empty or
	 * too long id, or one holding a NUL, stops the enrollment. */
	int (*list)(void *user, acme_smime_mail_entry_fn entry, void *arg);
	/* Read the whole message id (RFC 5322 text, CRLF or LF) into buf and
	 * its length into *len. Return ACME_SMIME_ERR_LIMIT for a message
	 * larger than size and ACME_SMIME_ERR_INVALID for one that is gone:
	 * the engine skips it (other failures stop the enrollment). */
	int (*read)(void *user, const char *id, char *buf, size_t size, size_t *len);
	/* Submit the reply: envelope sender from, recipients to[0..to_count),
	 * the mail as len bytes of CRLF text (not dot-stuffed). 0 means the
	 * mail is on its way (the grace period starts). */
	int (*send)(void *user, const char *from, const char *const *to,
		size_t to_count, const char *mail, size_t len);
	/* Optional (NULL: never called): delete message id, the answered
	 * challenge mail, when the configuration's mail_delete is set. */
	int (*remove)(void *user, const char *id);
} acme_smime_mailbox;

/* Challenge hook operations (dns identifiers, http-01). */
#define ACME_SMIME_CHALLENGE_PROVISION 1
#define ACME_SMIME_CHALLENGE_REMOVE    2

typedef struct acme_smime_ports {
	void *user;   /* passed back to every hook */

	/* TCP. connect returns a handle >= 0 (the connection may still be in
	 * progress: the first send/recv reports its failure) or a negative
	 * value. send/recv move up to len bytes and return the count, 0 when
	 * they would block, or ACME_SMIME_NET_CLOSED / ACME_SMIME_NET_ERROR. */
	int (*net_connect)(void *user, const char *host, unsigned port);
	int (*net_send)(void *user, int handle, const unsigned char *buf, size_t len);
	int (*net_recv)(void *user, int handle, unsigned char *buf, size_t len);
	void (*net_close)(void *user, int handle);

	/* Optional, for acme_smime_run(): block until handle is ready for
	 * events (ACME_SMIME_IO_*) or timeout_ms passes, returning the ready
	 * events, 0 on timeout, negative on error; and sleep. A port may do
	 * its own work while it waits (the POSIX port serves http-01). */
	int (*net_wait)(void *user, int handle, int events, uint32_t timeout_ms);
	void (*sleep_ms)(void *user, uint32_t ms);

	/* Wall clock, Unix seconds, 0 when unknown (certificate validity); and
	 * a monotonic millisecond counter (waits and timeouts). */
	uint64_t (*unix_time)(void *user);
	uint64_t (*monotonic_ms)(void *user);

	/* Entropy: fill buf; 0 on success. */
	acme_smime_entropy_fn entropy;

	/* Optional logging; never given secrets. */
	void (*log)(void *user, int level, const char *msg);

	/* The persistent store (account, enrollment in progress,
	 * certificate). NULL: nothing persists, every run starts over. */
	const acme_smime_flash *flash;

	/* Optional: DNS TXT lookups for DKIM keys (see acme_smime_dns_txt_fn);
	 * NULL: DKIM cannot be verified. */
	acme_smime_dns_txt_fn dns_txt;

	/* Optional: the caller's own mailbox for email identifiers; NULL:
	 * the built-in POP3 and SMTP clients (the config's pop3, smtp). */
	const acme_smime_mailbox *mailbox;

	/* Optional, for dns identifiers: publish (PROVISION) or withdraw
	 * (REMOVE) the http-01 key authorization for token. Return 0 when
	 * done, 1 when not yet (the engine asks again later), negative on
	 * failure. */
	int (*challenge)(void *user, int op, const char *identifier,
		const char *token, const char *key_authorization);
} acme_smime_ports;

/* How a mail server connection is protected. */
#define ACME_SMIME_TLS_NONE     0   /* plain text (test set-ups only) */
#define ACME_SMIME_TLS_STARTTLS 1   /* POP3 STLS / SMTP STARTTLS */
#define ACME_SMIME_TLS_IMPLICIT 2   /* POP3S (995) / SMTPS (465) */

/* A mail server of the built-in POP3 and SMTP clients. The password is
 * never logged and leaves the library only towards this server. */
typedef struct acme_smime_mail_server {
	const char *host;
	unsigned port;
	int tls;                          /* ACME_SMIME_TLS_* */
	const char *user;                 /* NULL: no login (SMTP only) */
	const char *password;
} acme_smime_mail_server;

typedef struct acme_smime_config {
	const char *directory_url;        /* https://host[:port]/path */
	const acme_smime_identifier *identifiers;
	size_t identifier_count;
	const char *contact;              /* "mailto:..." or NULL */
	int agree_tos;                    /* send termsOfServiceAgreed: true */
	const char *eab_kid;              /* external account binding, or NULL */
	const char *eab_hmac_key;         /* base64url MAC key */
	int key_usage;                    /* ACME_SMIME_KU_* for the CSR */
	int cert_key_type;                /* ACME_SMIME_KEY_*; 0 = P-256 */
	int account_key_type;             /* ACME_SMIME_KEY_*; 0 = P-256 */

	/* Trust anchors for the ACME server's TLS certificate. */
	const br_x509_trust_anchor *trust_anchors;
	size_t trust_anchor_count;

	/* Polling: Retry-After is clamped to [poll_min_s, poll_max_s];
	 * without it the delay doubles from poll_min_s. 0 = defaults
	 * (1 s, 60 s). retry_after_max_s bounds a rateLimited/503 wait
	 * (default 300 s); request_retries bounds retries of one request
	 * (default 5); deadline_s bounds a whole enrollment (default 3600 s). */
	uint32_t poll_min_s, poll_max_s, retry_after_max_s;
	uint32_t request_retries, deadline_s;

	/* Renewal: a stored certificate for this configuration is renewed
	 * once renew_percent of its lifetime has passed (0 = 67, two
	 * thirds); before that acme_smime_step() returns ACME_SMIME_DONE
	 * without any network traffic. force_renew enrolls regardless. */
	unsigned renew_percent;
	int force_renew;

	/* RFC 8823 (email identifiers): the device's mailbox (POP3), the
	 * submission server (SMTP), their trust anchors, the challenge-mail
	 * policy (ACME_SMIME_MAIL_* flags; 0 = strict), the token joining
	 * (ACME_SMIME_CONCAT_*), the wait between the response's SMTP
	 * acceptance and the challenge POST (reply_grace_s, default 30: the
	 * CA must have the reply before it looks), how often the mailbox is
	 * polled (mail_poll_s, default 10) and for how long before giving up
	 * (mail_wait_s, default 600). */
	acme_smime_mail_server pop3, smtp;
	const br_x509_trust_anchor *mail_trust_anchors;
	size_t mail_trust_anchor_count;
	unsigned mail_policy;

	/* Challenge-mail authenticity (strict policy): anchors for S/MIME
	 * signers, and the authserv-id of the device's own receiving server
	 * whose Authentication-Results are trusted (NULL: none). DKIM keys
	 * come through the ports' dns_txt hook. */
	const br_x509_trust_anchor *smime_trust_anchors;
	size_t smime_trust_anchor_count;
	const char *trusted_authserv_id;
	int token_concat;
	uint32_t reply_grace_s, mail_poll_s, mail_wait_s;
	/* Delete the answered challenge mail from the mailbox (POP3 DELE,
	 * or the mailbox hook's remove); 0 keeps every message. Messages
	 * the engine did not answer are never deleted. */
	int mail_delete;
} acme_smime_config;

/* Counters, for tests and measurements. */
typedef struct acme_smime_stats {
	unsigned tls_handshakes;
	unsigned http_requests;
	unsigned bad_nonce_retries;
} acme_smime_stats;

/* The last error, sticky until acme_smime_init(). */
typedef struct acme_smime_error {
	int code;                         /* ACME_SMIME_ERR_* */
	int retryable;                    /* a later attempt may succeed */
	int http_status;                  /* of the failing response, or 0 */
	char text[160];                   /* one line for a human */
	char problem_type[96];            /* ACME problem "type", or "" */
	char problem_detail[256];         /* ACME problem "detail", or "" */
} acme_smime_error;

/* Largest flash program unit supported (bytes buffered per write). */
#ifndef ACME_SMIME_MAX_PROGRAM_UNIT
#define ACME_SMIME_MAX_PROGRAM_UNIT 256
#endif

/* Maximum payload of each record. The defaults fill whole 4 KiB sectors
 * (one slot = 1, 1, 3 and 1 sectors) with any program unit: a larger
 * value up to the sector boundary costs no flash. Account: key and two
 * URLs (about 600 bytes). Enrollment: order, up to ACME_SMIME_MAX_AUTHZ
 * authorization URLs, challenge, token, from, UIDL snapshot, Message-ID
 * (about 2.5 KiB). Certificate: key and the PEM chain. */
#ifndef ACME_SMIME_STORE_MAX_ACCOUNT
#define ACME_SMIME_STORE_MAX_ACCOUNT 1024
#endif
#ifndef ACME_SMIME_STORE_MAX_ENROLLMENT
#define ACME_SMIME_STORE_MAX_ENROLLMENT 3840
#endif
#ifndef ACME_SMIME_STORE_MAX_CERT
#define ACME_SMIME_STORE_MAX_CERT 12032
#endif
#ifndef ACME_SMIME_STORE_MAX_TIME
#define ACME_SMIME_STORE_MAX_TIME 16
#endif

/* Bytes of flash the store uses from address 0 for a geometry: two
 * slots per record, each whole sectors holding the header area (32 bytes
 * or one program unit) and the maximum payload. 48 KiB with 4 KiB sectors
 * and the default maxima, whatever the program unit. */
#define ACME_SMIME_STORE_HEADER_AREA(unit) ((unit) > 32 ? (unit) : 32)
#define ACME_SMIME_STORE_SLOT_SIZE(max, sector, unit) \
	((ACME_SMIME_STORE_HEADER_AREA(unit) + (max) + (sector) - 1) / \
	(sector) * (sector))
#define ACME_SMIME_STORE_SIZE(sector, unit) (2 * ( \
	ACME_SMIME_STORE_SLOT_SIZE(ACME_SMIME_STORE_MAX_ACCOUNT, sector, unit) + \
	ACME_SMIME_STORE_SLOT_SIZE(ACME_SMIME_STORE_MAX_ENROLLMENT, sector, unit) + \
	ACME_SMIME_STORE_SLOT_SIZE(ACME_SMIME_STORE_MAX_CERT, sector, unit) + \
	ACME_SMIME_STORE_SLOT_SIZE(ACME_SMIME_STORE_MAX_TIME, sector, unit)))

/* The header is built in the writer's unit buffer. */
#if ACME_SMIME_MAX_PROGRAM_UNIT < 32
#error "ACME_SMIME_MAX_PROGRAM_UNIT must be at least 32 (the slot header)"
#endif

/* State of one record being written to flash in pieces (private). */
typedef struct acme_smime_store_writer {
	const acme_smime_flash *flash;
	unsigned record;          /* STORE_REC_* in acme_smime.c */
	uint32_t slot;            /* address of the slot being written */
	uint32_t seq;             /* sequence number it will carry */
	uint32_t length;          /* payload bytes accepted so far */
	uint32_t crc;             /* running CRC-32 of the payload */
	size_t pending;           /* bytes in unit[] not yet programmed */
	unsigned char unit[ACME_SMIME_MAX_PROGRAM_UNIT];
	int failed;               /* 0, or the error that stopped the write */
} acme_smime_store_writer;

/*
 * The context. Allocate it (statically or on a stack that can hold it) and
 * pass it to the functions below; its fields are private to the library
 * and may change between releases. sizeof(acme_smime_ctx) is part of the
 * RAM cost stated in the README.
 */
#define ACME_SMIME_MAX_HOST 64

typedef struct acme_smime_ctx {
	/* configuration and hooks */
	const acme_smime_config *cfg;
	const acme_smime_ports *ports;
	unsigned char *work;
	size_t work_size;

	/* engine */
	int state;                        /* ST_* in acme_smime.c */
	int phase;                        /* PH_* in acme_smime.c */
	int after;                        /* state to resume after new-nonce */
	uint64_t wake_ms;
	uint64_t deadline_ms;
	uint32_t poll_delay_s;
	unsigned retries, nonce_retries;
	int account_renewed;              /* re-registered the key once */
	const char *wait_reason;
	unsigned authz_count, authz_index;
	acme_smime_error err;
	acme_smime_stats stats;

	/* keys */
	acme_smime_key account_key;
	acme_smime_key cert_key;

	/* ACME URLs (exact strings as the server sent them) */
	char url_new_nonce[ACME_SMIME_MAX_URL + 1];
	char url_new_account[ACME_SMIME_MAX_URL + 1];
	char url_new_order[ACME_SMIME_MAX_URL + 1];
	char url_account[ACME_SMIME_MAX_URL + 1];
	char url_order[ACME_SMIME_MAX_URL + 1];
	char url_finalize[ACME_SMIME_MAX_URL + 1];
	char url_certificate[ACME_SMIME_MAX_URL + 1];
	char url_authz[ACME_SMIME_MAX_AUTHZ][ACME_SMIME_MAX_URL + 1];
	acme_smime_challenge challenge;   /* of the authorization in work */
	char authz_identifier[ACME_SMIME_MAX_ADDR + 1];
	size_t chain_len;                 /* downloaded PEM chain, in work */
	char nonce[ACME_SMIME_MAX_NONCE + 1];

	/* transport: one TLS connection, reused while the server keeps it */
	br_ssl_client_context ssl;
	br_x509_minimal_context x509;
	int sock;                         /* -1 when closed */
	int io_events;
	int conn_state;
	char conn_host[ACME_SMIME_MAX_HOST + 1];
	unsigned conn_port;
	int handshake_counted;
	int conn_tls;                     /* TLS runs on the socket */
	br_ssl_session_parameters acme_session;   /* resumed after mail */
	char acme_session_host[ACME_SMIME_MAX_HOST + 1];
	unsigned acme_session_port;
	int conn_mail;                    /* connected to a mail server */
	unsigned conn_requests;           /* answered on this connection */
	char req_host[ACME_SMIME_MAX_HOST + 1];
	unsigned req_port;

	/* HTTP exchange in progress */
	int req_kind;                     /* REQ_* in acme_smime.c */
	int xfer;                         /* XS_* in acme_smime.c */
	size_t req_len, req_sent;
	size_t resp_bytes;
	int resp_state;
	int status;
	size_t content_length;            /* (size_t)-1 when absent */
	int chunked, keep_alive;
	size_t chunk_left;
	size_t body_len;                  /* body bytes in the HTTP area */
	size_t body_total;                /* body bytes received */
	size_t line_len;
	int line_overflow;
	char line[ACME_SMIME_MAX_HEADER_LINE + 1];
	char location[ACME_SMIME_MAX_URL + 1];
	unsigned link_alternates;         /* Link rel="alternate" count */
	char resp_nonce[ACME_SMIME_MAX_NONCE + 1];
	uint32_t retry_after_s;
	int has_retry_after;
	int problem_json;

	/* RFC 8823: the mailbox snapshot (hashes of the UIDs present before
	 * newOrder), messages examined and refused in this run, the mail
	 * exchange in progress and what was done for the current challenge */
	unsigned snapshot_count;          /* ids kept (a ring when full) */
	uint32_t snapshot_total;          /* messages in the snapshot */
	uint32_t snapshot[ACME_SMIME_MAX_SNAPSHOT];
	uint32_t examined_count;          /* examined so far; a ring keeps the last */
	uint32_t examined_last;           /* the latest (examined_count > 0) */
	uint32_t examined[ACME_SMIME_MAX_EXAMINED_KEPT];
	unsigned candidate_count, candidate_index;
	unsigned candidate[ACME_SMIME_MAX_EXAMINED];
	uint32_t candidate_uid[ACME_SMIME_MAX_EXAMINED];
	uint32_t listed;                  /* entries of the listing so far */
	int list_bad;                     /* a malformed listing entry */
	char mail_id[ACME_SMIME_MAX_MAIL_ID + 1];   /* mailbox hook candidate */
	size_t mail_size;                 /* its size from the listing, or 0;
	                                     a deferred POP3 mail's length */
	int snapshot_taken;
	uint64_t snapshot_time;           /* Unix seconds, 0 unknown */
	int mx_kind, mx_state, mx_ok, mx_truncated, mx_secret, mx_from;
	int mbox_purpose;
	size_t reply_len;                 /* the reply mail, in the HTTP area */
	unsigned flags_authz;             /* authorization email_flags is for */
	int mx_code;                      /* SMTP reply code */
	unsigned mail_caps;
	unsigned rcpt_index;
	int mail_found;                   /* challenge mail accepted */
	int mail_deferred;                /* its S/MIME check waits for room */
	unsigned email_flags;             /* EMAIL_* in acme_smime.c */
	uint32_t answered_uid;
	unsigned answered_count;          /* token-part1 hashes answered, ever */
	uint32_t answered_tokens[8];
	uint64_t mail_deadline_ms;

	/* persistence (section 7 of acme_smime.c) */
	unsigned char ident_hash[32];     /* directory + identifiers */
	uint64_t time_floor;              /* the clock is never behind this */
	uint64_t renew_at;                /* of the current certificate */
	int resume_order;                 /* url_order came from the store */
	int sink_wanted, sink;            /* body streams to the cert record */
	size_t sink_len;
	acme_smime_store_writer store_writer;
} acme_smime_ctx;

/* Set up ctx for one enrollment. cfg, ports and work must outlive ctx;
 * work must hold ACME_SMIME_WORKBUF_SIZE bytes and be aligned for int.
 * account_key is a key the caller keeps, or NULL: then the store's key is
 * used, or a new one is generated (and kept in the store when there is
 * one; read it with acme_smime_account_key()). With a store, the order in
 * progress and the certificate are taken from it too (see the config's
 * renewal fields). Returns ACME_SMIME_OK or an error. */
int acme_smime_init(acme_smime_ctx *ctx, const acme_smime_config *cfg,
	const acme_smime_ports *ports, unsigned char *work, size_t work_size,
	const acme_smime_key *account_key);

/* Advance the enrollment without blocking. Returns ACME_SMIME_AGAIN,
 * ACME_SMIME_WANT_IO, ACME_SMIME_WANT_TIME, ACME_SMIME_DONE or a negative
 * error (sticky: later calls return it again). */
int acme_smime_step(acme_smime_ctx *ctx);

/* Drive acme_smime_step() to the end with the blocking helpers of the
 * ports (net_wait, sleep_ms). Returns ACME_SMIME_DONE or an error. */
int acme_smime_run(acme_smime_ctx *ctx);

/* What the engine waits for after ACME_SMIME_WANT_IO: the handle and
 * ACME_SMIME_IO_* events. After ACME_SMIME_WANT_TIME: the monotonic
 * millisecond time to call again. */
int acme_smime_io(const acme_smime_ctx *ctx, int *events);
uint64_t acme_smime_wake_ms(const acme_smime_ctx *ctx);

/* Why the engine waits after ACME_SMIME_WANT_TIME: "backoff" (polling
 * without a Retry-After), "retry-after", "rate-limited", "server-error",
 * "challenge-hook"; "" when it does not wait. */
const char *acme_smime_wait_reason(const acme_smime_ctx *ctx);

/* The current state's name ("directory", "new-order", ...), for progress. */
const char *acme_smime_state_name(const acme_smime_ctx *ctx);

/* The sticky error, or NULL when there is none. */
const acme_smime_error *acme_smime_last_error(const acme_smime_ctx *ctx);

/* The account key in use and the account URL ("" before it is known). */
const acme_smime_key *acme_smime_account_key(const acme_smime_ctx *ctx);
const char *acme_smime_account_url(const acme_smime_ctx *ctx);

/* After ACME_SMIME_DONE: the certificate key, and the PEM chain as
 * downloaded (leaf first) inside the work buffer, valid until the next
 * call that uses ctx. The chain is NULL when nothing was downloaded in
 * this run (the stored certificate was not due) or when it did not fit in
 * the work buffer: read it from the store then (acme_smime_stored_chain).
 * With a store, the certificate key is the stored one. */
const acme_smime_key *acme_smime_cert_key(const acme_smime_ctx *ctx);
const char *acme_smime_cert_chain(const acme_smime_ctx *ctx, size_t *len);

/* The certificate kept in the store. Functions below read the flash
 * directly and need no context. */
typedef struct acme_smime_cert_info {
	uint64_t not_before, not_after;   /* Unix seconds, of the leaf */
	uint64_t renew_at;                /* when renewal is due */
	size_t chain_len;                 /* bytes of PEM */
	int matches_config;               /* same directory and identifiers */
} acme_smime_cert_info;

/* Describe the stored certificate; copy its private key into key unless
 * key is NULL (wipe it when done). cfg (may be NULL) supplies the renewal
 * percentage and the configuration to compare with. Returns 1 when a
 * certificate is stored, 0 when none is, or ACME_SMIME_ERR_STORE. */
int acme_smime_stored_cert(const acme_smime_flash *flash,
	const acme_smime_config *cfg, acme_smime_cert_info *info,
	acme_smime_key *key);

/* Read len bytes of the stored PEM chain (leaf first) from offset. Returns
 * the number of bytes read (less than len at the end), or an error. */
int acme_smime_stored_chain(const acme_smime_flash *flash, size_t offset,
	char *buf, size_t len);

/* Erase the whole store (factory reset). */
int acme_smime_store_erase(const acme_smime_flash *flash);

/* A private key as PKCS#8 DER or PEM ("PRIVATE KEY"); returns the length.
 * The output is secret: wipe it after use. */
int acme_smime_key_to_der(const acme_smime_key *key, unsigned char *out,
	size_t out_size);
int acme_smime_key_to_pem(const acme_smime_key *key, char *out,
	size_t out_size);

/* Counters since acme_smime_init(), for tests and measurements. */
const acme_smime_stats *acme_smime_get_stats(const acme_smime_ctx *ctx);

/* Close the connection and wipe the context and the work buffer: keys,
 * passwords in flight and mail text are gone. Call it when done with ctx
 * (after reading what you need from it). */
void acme_smime_close(acme_smime_ctx *ctx);

/* Parse PEM certificates (e.g. /etc/ssl/certs/ca-certificates.crt) into
 * BearSSL trust anchors. Names and keys are copied into storage; anchors
 * are written to tas (at most max_tas). Returns the number of anchors, or
 * ACME_SMIME_ERR_BUFFER when storage or tas is too small, or
 * ACME_SMIME_ERR_ENCODING for broken PEM/DER. Certificates with keys
 * BearSSL cannot use are skipped. */
int acme_smime_trust_anchors_from_pem(const char *pem, size_t pem_len,
	unsigned char *storage, size_t storage_size,
	br_x509_trust_anchor *tas, size_t max_tas);

#ifdef __cplusplus
}
#endif

#endif /* ACME_SMIME_H */
