/* test_hash.c - streaming sha256, md5 and sha1 give the known digests whatever the piece sizes; a copy is independent. */
#include <string.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/hash.h"

static void test_known_digests(void)
{
    struct sg_hash h;
    char sha[SG_SHA256_HEX], md5[SG_MD5_HEX];
    CHECK_INT_EQ(sg_hash_init(&h, 1), SG_OK);
    sg_hash_update(&h, "ab", 2);
    sg_hash_update(&h, "c", 1);
    sg_hash_final(&h, sha, md5);
    CHECK_STR_EQ(sha, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK_STR_EQ(md5, "900150983cd24fb0d6963f7d28e17f72");
    CHECK_INT_EQ(sg_hash_init(&h, 0), SG_OK);
    sg_hash_final(&h, sha, NULL);
    CHECK_STR_EQ(sha, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    sg_hash_free(&h); /* harmless after final */
}

static void test_sha1_and_only_what_was_asked(void)
{
    struct sg_hash h;
    char sha[SG_SHA256_HEX] = "untouched", md5[SG_MD5_HEX] = "untouched", sha1[SG_SHA1_HEX];
    CHECK_INT_EQ(sg_hash_start(&h, SG_HASH_SHA1), SG_OK);
    sg_hash_update(&h, "abc", 3);
    sg_hash_final_all(&h, sha, md5, sha1);
    CHECK_STR_EQ(sha1, "a9993e364706816aba3e25717850c26c9cd0d89d");
    CHECK_STR_EQ(sha, "untouched");
    CHECK_STR_EQ(md5, "untouched");
}

/* A copy taken mid-stream goes on from the same state, and neither disturbs the other. */
static void test_copy(void)
{
    struct sg_hash a, b;
    char sa[SG_SHA256_HEX], sb[SG_SHA256_HEX], m[SG_MD5_HEX];
    CHECK_INT_EQ(sg_hash_start(&a, SG_HASH_SHA256 | SG_HASH_MD5), SG_OK);
    sg_hash_update(&a, "ab", 2);
    CHECK_INT_EQ(sg_hash_copy(&b, &a), SG_OK);
    sg_hash_update(&a, "c", 1);
    sg_hash_update(&b, "x", 1);
    sg_hash_final_all(&b, sb, m, NULL);
    sg_hash_final(&a, sa, NULL);
    CHECK_STR_EQ(sa, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    CHECK_STR_EQ(sb, "b2bdab4230154046ad0b7dfa830a9260caa5bd6ae230e582a2244ab4bf0b4ca5"); /* sha256("abx") */
    CHECK_STR_EQ(m, "ffc810508b973a0cc3fba9474a856ba7");                                  /* md5("abx") */
}

int main(void)
{
    RUN_TEST(test_known_digests);
    RUN_TEST(test_sha1_and_only_what_was_asked);
    RUN_TEST(test_copy);
    return TESTS_DONE();
}
