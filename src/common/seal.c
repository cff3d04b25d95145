/*
 * seal.c - the record layer of seal.h on libsodium's AEADs.
 *
 * Records are opened in place in the receive buffer and handed out from
 * there, unless the caller allows them straight into its memory (see
 * em_seal_read): libsodium's AES-GCM may write plaintext before it knows
 * the tag is bad (and then wipes it), and on the node the caller's memory
 * is a region that a forged write must not touch at all. Sending, a large
 * piece of a batch is sealed from where it lies, small ones are gathered.
 */
#include "common/seal.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "common/wire.h"

/* Several records per receive, so small messages cost one system call
 * for many; the buffer always has room for one whole record. */
#define IN_CAP (4 * EM_SEAL_REC_MAX)
/* A piece of a batch this large (bulk data) is sealed from where it lies,
 * in records of its own, rather than copied in first. */
#define DIRECT_MIN (16u << 10)

struct em_seal {
	/* first: libsodium wants it 16-byte aligned */
	crypto_aead_aes256gcm_state aes;
	uint8_t key[EM_SEAL_KEY_LEN];
	int cipher;
	int failed;   /* 0, or the error every later read returns */
	uint64_t ctr; /* the next record's nonce */
	uint8_t *in;  /* received ciphertext; opened records' plaintext */
	size_t rpos, wpos;
	size_t ppos, pend; /* plaintext waiting, in[ppos..pend) */
	uint8_t *out;      /* one sealed record being sent */
};

bool em_seal_aes_available(void)
{
	if (sodium_init() < 0)
		return false;
	return crypto_aead_aes256gcm_is_available() != 0;
}

const char *em_cipher_name(int cipher)
{
	switch (cipher) {
	case EM_CIPHER_AES256GCM:
		return "AES-256-GCM";
	case EM_CIPHER_XCHACHA20POLY1305:
		return "XChaCha20-Poly1305";
	default:
		return "none";
	}
}

struct em_seal *em_seal_create(int cipher, const uint8_t key[EM_SEAL_KEY_LEN])
{
	struct em_seal *s;

	if (sodium_init() < 0)
		return NULL;
	if (cipher != EM_CIPHER_XCHACHA20POLY1305 &&
	    (cipher != EM_CIPHER_AES256GCM || !crypto_aead_aes256gcm_is_available()))
		return NULL;
	if (posix_memalign((void **)&s, 64, sizeof(*s)))
		return NULL;
	memset(s, 0, sizeof(*s));
	s->cipher = cipher;
	s->in = malloc(IN_CAP);
	s->out = malloc(EM_SEAL_REC_MAX);
	if (!s->in || !s->out) {
		em_seal_destroy(s);
		return NULL;
	}
	if (cipher == EM_CIPHER_AES256GCM)
		crypto_aead_aes256gcm_beforenm(&s->aes, key);
	else
		memcpy(s->key, key, EM_SEAL_KEY_LEN);
	return s;
}

void em_seal_destroy(struct em_seal *s)
{
	if (!s)
		return;
	sodium_memzero(s->key, sizeof(s->key));
	sodium_memzero(&s->aes, sizeof(s->aes));
	free(s->in);
	free(s->out);
	free(s);
}

/* The record counter as a nonce; the rest of the nonce stays zero (the
 * key is the direction's own, so no other stream shares these nonces). */
static void nonce_of(uint64_t ctr, uint8_t npub[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES])
{
	memset(npub, 0, crypto_aead_xchacha20poly1305_ietf_NPUBBYTES);
	em_put64(npub, ctr);
}

ssize_t em_seal_wrap(struct em_seal *s, struct iovec **iov, int *n, const uint8_t **rec)
{
	uint8_t npub[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	uint8_t *p = s->out + EM_SEAL_HDR;
	const uint8_t *src = p;
	uint32_t len = 0;

	while (*n > 0 && len < EM_SEAL_MAX) {
		struct iovec *v = *iov;
		size_t take = EM_MIN(v->iov_len, EM_SEAL_MAX - len);

		if (v->iov_len >= DIRECT_MIN) {
			if (len)
				break; /* its own record, next time */
			src = v->iov_base;
		} else {
			memcpy(p + len, v->iov_base, take);
		}
		len += (uint32_t)take;
		v->iov_base = (uint8_t *)v->iov_base + take;
		v->iov_len -= take;
		if (!v->iov_len) {
			(*iov)++;
			(*n)--;
		}
		if (src != p)
			break;
	}
	if (!len)
		return 0;
	if (s->ctr == UINT64_MAX)
		return -EOVERFLOW;
	em_put32(s->out, len);
	nonce_of(s->ctr++, npub);
	if (s->cipher == EM_CIPHER_AES256GCM)
		crypto_aead_aes256gcm_encrypt_detached_afternm(p, p + len, NULL, src, len, s->out,
							       EM_SEAL_HDR, NULL, npub, &s->aes);
	else
		crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
			p, p + len, NULL, src, len, s->out, EM_SEAL_HDR, NULL, npub, s->key);
	*rec = s->out;
	return EM_SEAL_HDR + (ssize_t)len + EM_SEAL_TAG;
}

size_t em_seal_room(struct em_seal *s, uint8_t **p)
{
	/* Plaintext still waiting lies before rpos; it is never moved. */
	if (s->ppos == s->pend && s->rpos && IN_CAP - s->wpos < EM_SEAL_REC_MAX) {
		memmove(s->in, s->in + s->rpos, s->wpos - s->rpos);
		s->wpos -= s->rpos;
		s->rpos = s->ppos = s->pend = 0;
	}
	*p = s->in + s->wpos;
	return IN_CAP - s->wpos;
}

void em_seal_fill(struct em_seal *s, size_t n)
{
	s->wpos += n;
}

/* Opens the record at rpos if it is whole: 1 opened, 0 not whole yet, or
 * -errno (the seal is then failed). With dst, a record whose plaintext fits
 * in dlen bytes is opened straight into dst (returns 2 and its length in
 * *dlen) instead of in place. */
static int open_next(struct em_seal *s, uint8_t *dst, size_t *dlen)
{
	uint8_t npub[crypto_aead_xchacha20poly1305_ietf_NPUBBYTES];
	uint8_t *r = s->in + s->rpos, *c = r + EM_SEAL_HDR;
	size_t have = s->wpos - s->rpos;
	uint32_t len;
	int rc;

	if (have < EM_SEAL_HDR)
		return 0;
	len = em_get32(r);
	if (len == 0 || len > EM_SEAL_MAX)
		return s->failed = -EPROTO;
	if (have < EM_SEAL_HDR + (size_t)len + EM_SEAL_TAG)
		return 0;
	nonce_of(s->ctr, npub);
	if (!dst || *dlen < len)
		dst = c;
	if (s->cipher == EM_CIPHER_AES256GCM)
		rc = crypto_aead_aes256gcm_decrypt_detached_afternm(dst, NULL, c, len, c + len, r,
								    EM_SEAL_HDR, npub, &s->aes);
	else
		rc = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
			dst, NULL, c, len, c + len, r, EM_SEAL_HDR, npub, s->key);
	if (rc != 0)
		return s->failed = -EBADMSG;
	s->ctr++;
	s->rpos += EM_SEAL_HDR + (size_t)len + EM_SEAL_TAG;
	if (dst != c) {
		*dlen = len;
		return 2;
	}
	s->ppos = (size_t)(c - s->in);
	s->pend = s->ppos + len;
	return 1;
}

ssize_t em_seal_read(struct em_seal *s, void *dst, size_t len, bool direct)
{
	size_t done = 0;

	if (s->failed)
		return s->failed;
	while (done < len) {
		size_t take;

		if (s->ppos == s->pend) {
			size_t dlen = len - done;
			int rc = open_next(s, direct ? (uint8_t *)dst + done : NULL, &dlen);
			if (rc < 0) /* what came before it was genuine */
				return done ? (ssize_t)done : rc;
			if (rc == 0)
				break;
			if (rc == 2) {
				done += dlen;
				continue;
			}
		}
		take = EM_MIN(len - done, s->pend - s->ppos);
		memcpy((uint8_t *)dst + done, s->in + s->ppos, take);
		s->ppos += take;
		done += take;
	}
	return (ssize_t)done;
}

bool em_seal_ready(const struct em_seal *s)
{
	size_t have = s->wpos - s->rpos;

	if (s->failed || s->ppos != s->pend)
		return true;
	if (have < EM_SEAL_HDR)
		return false;
	/* a bad length is "ready" too: the read reports it */
	uint32_t len = em_get32(s->in + s->rpos);
	return len == 0 || len > EM_SEAL_MAX || have >= EM_SEAL_HDR + (size_t)len + EM_SEAL_TAG;
}

bool em_seal_partial(const struct em_seal *s)
{
	return s->wpos != s->rpos && !em_seal_ready(s);
}
