/* test_hash.c - streaming sha256 and md5 give the known digests whatever the piece sizes. */
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

int main(void)
{
    RUN_TEST(test_known_digests);
    return TESTS_DONE();
}
