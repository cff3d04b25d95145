/*
 * tag.c - the per-frame tags of authenticated mode, for links where both
 * ends are ethermem and share a session over the TCP control path.
 *
 * OmniXtend itself authenticates nothing: a frame is believed because of
 * its source MAC and its sequence number.  In authenticated mode each frame
 * carries SipHash-2-4 (libsodium's crypto_shorthash) of all its bytes, the
 * Ethernet header included, after the frame mask; the receiver checks it
 * before it decodes anything, so a forged frame changes no state at all.
 * SipHash is a keyed PRF built for short inputs, cheap next to a frame's
 * copy, and 64 bits of tag make a blind forgery a 2^-64 guess per frame.
 * The tag does not hide the data; it proves the frame came from the holder
 * of the session.  Keys are per session and per direction, hashed from the
 * session's shared secret, so a frame cannot be replayed into another
 * session or reflected to its sender.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "ox/ox.h"

_Static_assert(crypto_shorthash_BYTES == OX_TAG_LEN, "SipHash-2-4 gives 8 bytes");
_Static_assert(crypto_shorthash_KEYBYTES == OX_TAG_KEYLEN, "SipHash keys are 16 bytes");

void ox_tag_keys(const uint8_t *secret, size_t len, bool node_side, uint8_t tx[OX_TAG_KEYLEN],
		 uint8_t rx[OX_TAG_KEYLEN])
{
	static const char to_node[] = "ethermem ox tag client->node v1";
	static const char to_client[] = "ethermem ox tag node->client v1";
	uint8_t a[OX_TAG_KEYLEN], b[OX_TAG_KEYLEN];

	if (sodium_init() < 0)
		abort();
	crypto_generichash(a, sizeof(a), (const uint8_t *)to_node, sizeof(to_node), secret, len);
	crypto_generichash(b, sizeof(b), (const uint8_t *)to_client, sizeof(to_client), secret,
			   len);
	memcpy(tx, node_side ? b : a, OX_TAG_KEYLEN);
	memcpy(rx, node_side ? a : b, OX_TAG_KEYLEN);
	sodium_memzero(a, sizeof(a));
	sodium_memzero(b, sizeof(b));
}

void ox_tag_put(const uint8_t key[OX_TAG_KEYLEN], uint8_t *frame, size_t len)
{
	crypto_shorthash(frame + len, frame, len, key);
}

bool ox_tag_ok(const uint8_t key[OX_TAG_KEYLEN], const uint8_t *frame, size_t len)
{
	uint8_t t[OX_TAG_LEN];

	if (len < OX_ETH_HLEN + OX_TAG_LEN)
		return false;
	crypto_shorthash(t, frame, len - OX_TAG_LEN, key);
	return sodium_memcmp(t, frame + len - OX_TAG_LEN, OX_TAG_LEN) == 0;
}

void ox_tag_wipe(void *p, size_t len)
{
	sodium_memzero(p, len);
}
