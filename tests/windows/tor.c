/* A stand-in for Tor in the Wine smoke test: a Windows program that is copied to tor.exe and
 * stays alive long enough (10 s) for the agent's process poll to see it. Test only. */
#include <windows.h>

int main(void)
{
    Sleep(10000);
    return 0;
}
