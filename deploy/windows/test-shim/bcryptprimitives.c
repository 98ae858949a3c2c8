/*
 * TEST SCAFFOLDING ONLY: never shipped, never installed by the MSI.
 *
 * Rust's standard library for Windows draws its random numbers from ProcessPrng in
 * bcryptprimitives.dll (Windows 10 and later). Wine 8 (Debian 12) lacks that export, so a
 * Rust program dies at start-up under it. Placed beside the exe, this DLL supplies ProcessPrng
 * on top of RtlGenRandom (advapi32!SystemFunction036), which Wine has.
 *
 * Built by deploy/windows/build.sh into target/windows/windows-test/.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG length: feed it in chunks. */
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
