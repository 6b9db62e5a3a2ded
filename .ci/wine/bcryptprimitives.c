/*
 * A stand-in for bcryptprimitives.dll under Wine releases that lack it (Wine 8 and older).
 *
 * Rust's standard library on Windows fills its random seeds with ProcessPrng from
 * bcryptprimitives.dll, loaded at start-up. Windows 10 and later ship it; Wine 8 does not, so
 * every Rust program aborts before main. This file exports ProcessPrng and forwards to
 * advapi32's RtlGenRandom (exported as SystemFunction036), which Wine implements over the
 * host's random source. Used by .ci/run to run the Windows test executables under Wine; it is
 * never part of a shipped build.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll bcryptprimitives.c
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* Fills `len` bytes at `data` with random bytes; always succeeds, as on Windows. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000u ? 0x40000000u : (ULONG)len;
        if (!SystemFunction036(data, chunk)) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
