/*
 * auth.c - the key derivation and proofs described in auth.h, on libsodium.
 */
#include "common/auth.h"

#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>

#include "common/util.h"

static void auth_init(void)
{
	/* sodium_init is idempotent and thread-safe after the first call. */
	if (sodium_init() < 0)
		em_log(EM_LOG_ERR, "libsodium failed to initialise");
}

int em_key_load(const char *path, uint8_t key[EM_KEY_LEN])
{
	uint8_t buf[4096];
	struct stat st;
	int n;

	auth_init();
	if (!path || !*path)
		return -EINVAL;
	/* Like ssh with a private key: a secret others on the host can read is
	 * no secret, so it is refused rather than used. Only regular files are
	 * checked; a pipe or a credentials device is the caller's to guard. */
	if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 077))
		return -EPERM;
	n = em_read_small_file(path, buf, sizeof(buf));
	if (n < 0)
		return n;
	/* Trailing newlines are an editor's, not the secret's. */
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n < 16) {
		sodium_memzero(buf, sizeof(buf));
		return -EINVAL;
	}
	crypto_generichash(key, EM_KEY_LEN, buf, (size_t)n, (const uint8_t *)"ethermem-secret-v1",
			   18);
	sodium_memzero(buf, sizeof(buf));
	return 0;
}

void em_random(void *buf, size_t len)
{
	auth_init();
	randombytes_buf(buf, len);
}

void em_auth_nonce(uint8_t nonce[EM_NONCE_LEN])
{
	em_random(nonce, EM_NONCE_LEN);
}

void em_auth_keypair(uint8_t pk[EM_NONCE_LEN], uint8_t sk[EM_NONCE_LEN])
{
	em_random(sk, EM_NONCE_LEN);
	crypto_scalarmult_base(pk, sk);
}

int em_auth_session_token(const uint8_t key[EM_KEY_LEN], const uint8_t sk[EM_NONCE_LEN],
			  const uint8_t peer_pk[EM_NONCE_LEN], const uint8_t cn[EM_NONCE_LEN],
			  const uint8_t sn[EM_NONCE_LEN], uint8_t token[EM_TOKEN_LEN],
			  unsigned cipher, uint8_t traffic[2][EM_KEY_LEN])
{
	uint8_t shared[crypto_scalarmult_BYTES];
	crypto_generichash_state st;
	static const char label[] = "ethermem session token v1";

	/* fails only for a peer key of small order, which no honest peer sends */
	if (crypto_scalarmult(shared, sk, peer_pk) != 0)
		return -EPROTO;
	crypto_generichash_init(&st, key, EM_KEY_LEN, EM_TOKEN_LEN);
	crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label));
	crypto_generichash_update(&st, shared, sizeof(shared));
	crypto_generichash_update(&st, cn, EM_NONCE_LEN);
	crypto_generichash_update(&st, sn, EM_NONCE_LEN);
	crypto_generichash_final(&st, token, EM_TOKEN_LEN);
	if (traffic) {
		static const char tlabel[] = "ethermem traffic v1";
		uint8_t both[2 * EM_KEY_LEN], c = (uint8_t)cipher;

		/* The cipher both sides think they agreed on is hashed in: a
		 * negotiation altered on the way gives the two sides different
		 * keys, and the first record fails instead of a weaker choice
		 * being used. */
		crypto_generichash_init(&st, key, EM_KEY_LEN, sizeof(both));
		crypto_generichash_update(&st, (const uint8_t *)tlabel, sizeof(tlabel));
		crypto_generichash_update(&st, &c, 1);
		crypto_generichash_update(&st, shared, sizeof(shared));
		crypto_generichash_update(&st, cn, EM_NONCE_LEN);
		crypto_generichash_update(&st, sn, EM_NONCE_LEN);
		crypto_generichash_final(&st, both, sizeof(both));
		memcpy(traffic[0], both, EM_KEY_LEN);
		memcpy(traffic[1], both + EM_KEY_LEN, EM_KEY_LEN);
		sodium_memzero(both, sizeof(both));
	}
	sodium_memzero(shared, sizeof(shared));
	return 0;
}

void em_auth_attach_proof(const uint8_t token[EM_TOKEN_LEN], const uint8_t cn[EM_NONCE_LEN],
			  const uint8_t sn[EM_NONCE_LEN], uint8_t out[EM_TOKEN_LEN])
{
	crypto_generichash_state st;
	static const char label[] = "ethermem attach v1";

	crypto_generichash_init(&st, token, EM_TOKEN_LEN, EM_TOKEN_LEN);
	crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label));
	crypto_generichash_update(&st, cn, EM_NONCE_LEN);
	crypto_generichash_update(&st, sn, EM_NONCE_LEN);
	crypto_generichash_final(&st, out, EM_TOKEN_LEN);
}

void em_auth_proof(const uint8_t key[EM_KEY_LEN], int node_side, const uint8_t first[EM_NONCE_LEN],
		   const uint8_t second[EM_NONCE_LEN], uint8_t proof[EM_PROOF_LEN])
{
	crypto_auth_hmacsha512256_state st;
	const char *label = node_side ? "ethermem node" : "ethermem client";

	crypto_auth_hmacsha512256_init(&st, key, EM_KEY_LEN);
	crypto_auth_hmacsha512256_update(&st, (const uint8_t *)label, strlen(label) + 1);
	crypto_auth_hmacsha512256_update(&st, first, EM_NONCE_LEN);
	crypto_auth_hmacsha512256_update(&st, second, EM_NONCE_LEN);
	crypto_auth_hmacsha512256_final(&st, proof);
}

int em_auth_check(const uint8_t a[EM_PROOF_LEN], const uint8_t b[EM_PROOF_LEN])
{
	return sodium_memcmp(a, b, EM_PROOF_LEN);
}

bool em_ct_equal(const void *a, const void *b, size_t len)
{
	return sodium_memcmp(a, b, len) == 0;
}

void em_secure_zero(void *p, size_t len)
{
	sodium_memzero(p, len);
}
