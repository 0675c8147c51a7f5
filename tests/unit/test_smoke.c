/* Placeholder test: proves the unit-test pipeline (build, sanitizers,
 * runner) works. Like every tests/unit/test_*.c it includes the library
 * source itself so that static functions are reachable. */
#include "acme_smime.c"

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

static void test_strerror_ok_not_null(void **state)
{
    (void)state;
    assert_non_null(acme_smime_strerror(ACME_SMIME_OK));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strerror_ok_not_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
